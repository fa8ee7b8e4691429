//! The lake against a real S3-compatible server process (moto), including the
//! conditional-put self-test.

use lakehouse_lake::{Error, Lake, LakeConfig, S3Config, Sensitive};
use lakehouse_tests::proxy::HeaderStrippingProxy;

use crate::lake_contract;

fn s3_config(endpoint: &str, root: &str) -> LakeConfig {
    LakeConfig {
        root: root.into(),
        s3: S3Config {
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint.into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some(Sensitive("testing".into())),
            allow_http: true,
            ..S3Config::default()
        },
    }
}

async fn open(endpoint: &str, root: &str) -> Lake {
    Lake::open(&s3_config(endpoint, root)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_s3() {
    let s3 = lakehouse_tests::s3().unwrap();
    s3.create_bucket("lake-round-trip").unwrap();
    let endpoint = s3.endpoint();
    let root = "s3://lake-round-trip/prod/lake";
    lake_contract::round_trip(open(&endpoint, root).await, async || {
        open(&endpoint, root).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_s3() {
    let s3 = lakehouse_tests::s3().unwrap();
    s3.create_bucket("lake-race").unwrap();
    let root = "s3://lake-race/lake";
    let endpoint = s3.endpoint();
    lake_contract::racing_writers(open(&endpoint, root).await, open(&endpoint, root).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_replace_s3() {
    let s3 = lakehouse_tests::s3().unwrap();
    s3.create_bucket("lake-replace").unwrap();
    let root = "s3://lake-replace/lake";
    let endpoint = s3.endpoint();
    lake_contract::atomic_replace(open(&endpoint, root).await, open(&endpoint, root).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_configured_without_conditional_put_is_refused() {
    let s3 = lakehouse_tests::s3().unwrap();
    s3.create_bucket("lake-no-cput").unwrap();
    let mut cfg = s3_config(&s3.endpoint(), "s3://lake-no-cput/lake");
    cfg.s3.conditional_put = Some("disabled".into());
    let err = Lake::open(&cfg).await.unwrap_err();
    assert!(
        matches!(err, Error::ConditionalPutUnsupported { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("does not honour conditional put"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_endpoint_that_ignores_if_none_match_is_refused() {
    let s3 = lakehouse_tests::s3().unwrap();
    s3.create_bucket("lake-ignores").unwrap();
    // the same server, behind a proxy that drops If-None-Match: a second create succeeds
    let upstream = s3.proc.addr().parse().unwrap();
    let proxy = HeaderStrippingProxy::start(upstream, "If-None-Match")
        .await
        .unwrap();
    let endpoint = format!("http://{}", proxy.addr);
    let err = Lake::open(&s3_config(&endpoint, "s3://lake-ignores/lake"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ConditionalPutUnsupported { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("second PUT"), "{err}");
    // and the server itself, spoken to directly, passes the self-test
    Lake::open(&s3_config(&s3.endpoint(), "s3://lake-ignores/lake"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_missing_bucket_is_a_clear_error() {
    let s3 = lakehouse_tests::s3().unwrap();
    let err = Lake::open(&s3_config(&s3.endpoint(), "s3://no-such-bucket/lake"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err}");
}

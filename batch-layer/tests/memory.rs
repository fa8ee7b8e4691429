//! `memory::hold` under the binaries' allocator: freed memory stays resident while a run is
//! in progress, and goes back to the system as soon as the last run ends.

use lakehouse_batch::memory;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The process's resident memory in MiB (`/proc/self/statm`, 4 KiB pages).
fn resident_mib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096 / (1 << 20)
}

/// Allocates `mib` MiB, touches every page, and frees them.
fn churn(mib: usize) {
    let mut v = vec![0u8; mib << 20];
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    std::hint::black_box(&v);
}

/// Sets the decay time of the one arena.
fn decay(ms: isize) {
    use tikv_jemalloc_ctl::{Access, AsName};
    b"arena.0.dirty_decay_ms\0".name().write(ms).unwrap();
}

#[test]
fn freed_memory_stays_while_held_and_goes_back_when_the_hold_ends() {
    // jemalloc set to purge freed pages at once: only the hold keeps them
    decay(0);
    let base = resident_mib();
    churn(256);
    assert!(
        resident_mib() < base + 64,
        "freed without a hold: {} MiB resident, {base} MiB before",
        resident_mib()
    );
    let held = memory::hold();
    churn(256);
    let during = resident_mib();
    assert!(
        during >= base + 200,
        "freed while held: {during} MiB resident, {base} MiB before"
    );
    // the next allocation of the same size reuses the held pages
    churn(256);
    assert!(resident_mib() <= during + 16, "{} MiB", resident_mib());
    drop(held);
    assert!(resident_mib() + 200 <= during, "{} MiB", resident_mib());

    // with the binaries' slow decay, the end of the hold still gives the pages back at once
    decay(30_000);
    let held = memory::hold();
    churn(256);
    let during = resident_mib();
    assert!(during >= base + 200, "{during} MiB");
    drop(held);
    let after = resident_mib();
    assert!(
        after + 200 <= during,
        "after the hold: {after} MiB resident, {during} MiB while held"
    );
}

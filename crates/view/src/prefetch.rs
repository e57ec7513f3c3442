//! Cache prefetch hints: a fold over many groups finds each group's entry in a large hash
//! table, a cache miss per change; asking for the entry a few changes ahead hides the miss
//! behind the work in between. Shared by the view's fold and the engine's folds.

/// Hints the processor to fetch the memory of `items` into its caches. A hint only: it reads
/// nothing the program sees and never faults.
#[inline]
pub fn prefetch<T>(items: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = items.as_ptr().cast::<u8>();
        for offset in (0..std::mem::size_of_val(items)).step_by(64) {
            // SAFETY: a prefetch reads nothing and does not fault, whatever the address; SSE,
            // which it needs, is part of every x86-64 processor.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    start.wrapping_add(offset).cast::<i8>(),
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}

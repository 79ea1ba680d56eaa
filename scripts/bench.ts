// Benchmarks: see issue 2 (forward/decode timings and intervention overhead ratios).
console.log('bench: not implemented yet');

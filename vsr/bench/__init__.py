"""`vsr bench`: throughput reports (`report`) and the naive per-frame loop they compare with (`naive`)."""

package dev.mobilesd.pipeline;

/** Reads the process's memory use, so a run can record its peak (reports' {@code memory.peak_rss_bytes}). */
public interface MemoryProbe {
    /** Takes a reading now (the resource manager calls it around every load and release). */
    void sample();

    /** The highest resident memory seen so far, in bytes, or -1 when unknown. */
    long peakBytes();

    /** How the numbers are measured, for the report's memory note. */
    String description();
}

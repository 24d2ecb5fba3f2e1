package dev.mobilesd.pipeline;

/**
 * Receives stage timings as the pipeline runs, named as latency reports name them (docs/latency-report.md):
 * text_encoder, unet_chunk_&lt;i&gt; (each chunk call), unet_step (a whole step: CFG halves, chunks, scheduler),
 * vae_decoder, end_to_end, and load (graphs opened during a run in low-memory mode).
 */
public interface StageListener {
    StageListener NONE = (name, seconds) -> { };

    void onStage(String name, double seconds);

    /** Called after each denoising step (for progress bars); {@code index} counts from 0. */
    default void onStep(int index, int total) {
    }
}

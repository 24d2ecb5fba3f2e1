package dev.mobilesd.pipeline;

/**
 * What to generate (the flags of {@code mobilesd generate}). Null / NaN fields take the manifest's defaults:
 * negative prompt {@code cfg.negative_prompt_default}, guidance {@code cfg.default_guidance}, scheduler
 * {@code scheduler.default}.
 */
public final class GenerationConfig {
    public final String prompt;
    public final String negativePrompt;
    public final int steps;
    public final double guidance;
    public final long seed;
    public final String scheduler;

    public GenerationConfig(String prompt, String negativePrompt, int steps, double guidance, long seed, String scheduler) {
        this.prompt = prompt;
        this.negativePrompt = negativePrompt;
        this.steps = steps;
        this.guidance = guidance;
        this.seed = seed;
        this.scheduler = scheduler;
    }
}

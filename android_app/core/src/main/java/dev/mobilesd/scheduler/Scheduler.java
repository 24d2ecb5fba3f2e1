package dev.mobilesd.scheduler;

import dev.mobilesd.random.RandomSource;
import dev.mobilesd.runtime.Tensor;

/**
 * A denoising scheduler after diffusers 0.42 (Apple's ml-stable-diffusion {@code Scheduler} protocol). One
 * instance serves one generation: {@link #step} keeps the multistep state and the step index, which it takes
 * from the first timestep it sees, as diffusers does.
 */
public interface Scheduler {
    /** The timesteps to run, in order (integers for DPM / DDIM / LCM; Euler's may be fractional). */
    float[] timesteps();

    /** The sigma table (one longer than the timesteps), or null for schedulers without one (DDIM, LCM). */
    float[] sigmas();

    /** What the initial noise is multiplied by. */
    float initNoiseSigma();

    /** The UNet input for the current step (identity for all but Euler). */
    Tensor scaleModelInput(Tensor sample, float timestep);

    /** The next latent from the (guided) model output. {@code random} supplies noise where the scheduler draws it (LCM). */
    Tensor step(Tensor modelOutput, float timestep, Tensor sample, RandomSource random);
}

package dev.mobilesd.scheduler;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.random.RandomSource;
import dev.mobilesd.runtime.Tensor;

/**
 * Latent Consistency Model scheduler (diffusers {@code LCMScheduler}): its own timesteps, spread over the
 * {@code original_inference_steps} distillation schedule; the c_skip / c_out boundary conditions; fresh noise
 * every step but the last, drawn from the generation's random source (the same torch generator as the
 * initial latent in diffusers).
 */
public final class LCMScheduler implements Scheduler {
    private static final float SIGMA_DATA_SQ = 0.25f;   // sigma_data = 0.5
    private final float[] timesteps;
    private final float[] alphasCumprod;
    private final float finalAlphaCumprod;
    private final float timestepScaling;
    private final boolean clipSample;
    private final float clipRange;
    private final PredictionType prediction;
    private int stepIndex = -1;

    public LCMScheduler(SchedulerConfig c, int steps) {
        int train = c.integer("num_train_timesteps");
        int original = c.integer("original_inference_steps");
        if (original > train) {
            throw new MobileSdException("original_inference_steps " + original + " exceeds num_train_timesteps " + train,
                    "re-export the bundle");
        }
        if (steps < 1 || steps > original) {
            throw new MobileSdException("LCM takes 1 to " + original + " steps (its original_inference_steps), got " + steps,
                    "pass --steps 4, for example");
        }
        c.requireOff("thresholding");
        prediction = c.predictionType();
        NoiseSchedule ns = NoiseSchedule.fromConfig(c);
        alphasCumprod = ns.alphasCumprod;
        finalAlphaCumprod = c.flag("set_alpha_to_one") ? 1f : alphasCumprod[0];
        timestepScaling = (float) c.number("timestep_scaling");
        clipSample = c.flag("clip_sample");
        clipRange = (float) c.number("clip_sample_range");
        int k = train / original;
        int[] origin = new int[original];
        for (int i = 0; i < original; i++) {
            origin[i] = (original - i) * k - 1;   // (1..original) * k - 1, reversed
        }
        double[] idx = NumpyRanges.linspace(0, original, steps, false);
        timesteps = new float[steps];
        for (int i = 0; i < steps; i++) {
            timesteps[i] = origin[(int) Math.floor(idx[i])];
        }
    }

    @Override
    public float[] timesteps() {
        return timesteps.clone();
    }

    @Override
    public float[] sigmas() {
        return null;
    }

    @Override
    public float initNoiseSigma() {
        return 1f;
    }

    @Override
    public Tensor scaleModelInput(Tensor sample, float timestep) {
        return sample;
    }

    @Override
    public Tensor step(Tensor modelOutput, float timestep, Tensor sampleTensor, RandomSource random) {
        if (stepIndex < 0) {
            int found = -1;
            for (int i = 0; i < timesteps.length && found < 0; i++) {
                if (timesteps[i] == timestep) {
                    found = i;
                }
            }
            if (found < 0) {
                throw new IllegalArgumentException("timestep " + timestep + " is not in the schedule");
            }
            stepIndex = found;
        }
        int t = (int) timestep;
        int prevT = stepIndex + 1 < timesteps.length ? (int) timesteps[stepIndex + 1] : t;
        float a = alphasCumprod[t];
        float aPrev = prevT >= 0 ? alphasCumprod[prevT] : finalAlphaCumprod;
        float b = 1f - a;
        float bPrev = 1f - aPrev;
        float scaled = (float) t * timestepScaling;
        float cSkip = SIGMA_DATA_SQ / (scaled * scaled + SIGMA_DATA_SQ);
        float cOut = scaled / (float) Math.sqrt(scaled * scaled + SIGMA_DATA_SQ);
        float aSqrt = (float) Math.sqrt(a);
        float bSqrt = (float) Math.sqrt(b);
        float[] s = sampleTensor.floats();
        float[] o = modelOutput.floats();
        float[] denoised = new float[s.length];
        for (int i = 0; i < s.length; i++) {
            float x0 = prediction == PredictionType.EPSILON ? (s[i] - bSqrt * o[i]) / aSqrt : aSqrt * s[i] - bSqrt * o[i];
            if (clipSample) {
                x0 = Math.max(-clipRange, Math.min(clipRange, x0));
            }
            denoised[i] = cOut * x0 + cSkip * s[i];
        }
        float[] prev = denoised;
        if (stepIndex != timesteps.length - 1) {
            float[] noise = random.normalArray(s.length);
            float aPrevSqrt = (float) Math.sqrt(aPrev);
            float bPrevSqrt = (float) Math.sqrt(bPrev);
            prev = new float[s.length];
            for (int i = 0; i < s.length; i++) {
                prev[i] = aPrevSqrt * denoised[i] + bPrevSqrt * noise[i];
            }
        }
        stepIndex++;
        return Tensor.ofFloats(sampleTensor.shape(), prev);
    }
}

package dev.mobilesd.scheduler;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.random.RandomSource;
import dev.mobilesd.runtime.Tensor;

/**
 * DDIM (diffusers {@code DDIMScheduler}) with eta 0: deterministic, no noise drawn. {@code set_alpha_to_one}
 * and {@code clip_sample} come from the config (SD's: false and false).
 */
public final class DDIMScheduler implements Scheduler {
    private final float[] timesteps;
    private final float[] alphasCumprod;
    private final float finalAlphaCumprod;
    private final int stepRatio;
    private final boolean clipSample;
    private final float clipRange;
    private final PredictionType prediction;

    public DDIMScheduler(SchedulerConfig c, int steps) {
        int train = c.integer("num_train_timesteps");
        if (steps < 1 || steps > train) {
            throw new MobileSdException("DDIM takes 1 to " + train + " steps (got " + steps + ")", "pass --steps 20, for example");
        }
        c.requireOff("thresholding");
        prediction = c.predictionType();
        NoiseSchedule ns = NoiseSchedule.fromConfig(c);
        alphasCumprod = ns.alphasCumprod;
        finalAlphaCumprod = c.flag("set_alpha_to_one") ? 1f : alphasCumprod[0];
        clipSample = c.flag("clip_sample");
        clipRange = (float) c.number("clip_sample_range");
        stepRatio = train / steps;
        String spacing = c.string("timestep_spacing");
        timesteps = new float[steps];
        if ("linspace".equals(spacing)) {
            double[] lin = NumpyRanges.linspace(0, train - 1, steps, true);
            for (int i = 0; i < steps; i++) {
                timesteps[i] = (float) (long) NumpyRanges.round(lin[steps - 1 - i]);
            }
        } else if ("leading".equals(spacing)) {
            int offset = c.integer("steps_offset");
            for (int i = 0; i < steps; i++) {
                timesteps[i] = (float) ((long) NumpyRanges.round((double) (steps - 1 - i) * stepRatio) + offset);
            }
        } else if ("trailing".equals(spacing)) {
            double[] a = NumpyRanges.arange(train, 0, -(train / (double) steps));
            if (a.length != steps) {
                throw new MobileSdException("trailing spacing gave " + a.length + " timesteps for " + steps + " steps",
                        "choose another number of steps");
            }
            for (int i = 0; i < steps; i++) {
                timesteps[i] = (float) ((long) NumpyRanges.round(a[i]) - 1);
            }
        } else {
            throw SchedulerConfig.unsupported("ddim", "timestep_spacing", spacing);
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
        int t = (int) timestep;
        int prevT = t - stepRatio;
        float a = alphasCumprod[t];
        float aPrev = prevT >= 0 ? alphasCumprod[prevT] : finalAlphaCumprod;
        float b = 1f - a;
        float aSqrt = (float) Math.sqrt(a);
        float bSqrt = (float) Math.sqrt(b);
        float[] s = sampleTensor.floats();
        float[] o = modelOutput.floats();
        float[] x0 = new float[s.length];
        float[] eps = o;
        if (prediction == PredictionType.EPSILON) {
            for (int i = 0; i < s.length; i++) {
                x0[i] = (s[i] - bSqrt * o[i]) / aSqrt;
            }
        } else {
            eps = new float[s.length];
            for (int i = 0; i < s.length; i++) {
                x0[i] = aSqrt * s[i] - bSqrt * o[i];
                eps[i] = aSqrt * o[i] + bSqrt * s[i];
            }
        }
        if (clipSample) {
            for (int i = 0; i < x0.length; i++) {
                x0[i] = Math.max(-clipRange, Math.min(clipRange, x0[i]));
            }
        }
        float bPrev = 1f - aPrev;
        float variance = (bPrev / b) * (1f - a / aPrev);
        float std = 0f * (float) Math.sqrt(variance);   // eta = 0 (NaN stays NaN, as in diffusers)
        float dirScale = (float) Math.sqrt((1f - aPrev) - std * std);
        float aPrevSqrt = (float) Math.sqrt(aPrev);
        float[] prev = new float[s.length];
        for (int i = 0; i < s.length; i++) {
            prev[i] = aPrevSqrt * x0[i] + dirScale * eps[i];
        }
        return Tensor.ofFloats(sampleTensor.shape(), prev);
    }
}

package dev.mobilesd.scheduler;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.random.RandomSource;
import dev.mobilesd.runtime.Tensor;

/**
 * Euler (diffusers {@code EulerDiscreteScheduler}) with {@code s_churn = 0}: sigmas interpolated linearly on the
 * training grid, the input scaled by 1 / sqrt(sigma^2 + 1), one Euler step of the probability-flow ODE.
 * At s_churn 0 diffusers draws no noise, so the random source is not used.
 */
public final class EulerDiscreteScheduler implements Scheduler {
    private final float[] timesteps;
    private final float[] sigmas;
    private final float initNoiseSigma;
    private final PredictionType prediction;
    private int stepIndex = -1;

    public EulerDiscreteScheduler(SchedulerConfig c, int steps) {
        if (steps < 1) {
            throw new MobileSdException("steps must be at least 1 (got " + steps + ")", "pass --steps 20, for example");
        }
        c.requireValue("interpolation_type", "linear");
        c.requireValue("timestep_type", "discrete");
        c.requireValue("final_sigmas_type", "zero");
        c.requireOff("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas");
        prediction = c.predictionType();
        NoiseSchedule ns = NoiseSchedule.fromConfig(c);
        int train = c.integer("num_train_timesteps");
        String spacing = c.string("timestep_spacing");
        timesteps = new float[steps];
        if ("linspace".equals(spacing)) {
            double[] lin = NumpyRanges.linspace(0, train - 1, steps, true);
            for (int i = 0; i < steps; i++) {
                timesteps[i] = (float) lin[steps - 1 - i];
            }
        } else if ("leading".equals(spacing)) {
            int ratio = train / steps;
            float offset = c.integer("steps_offset");
            for (int i = 0; i < steps; i++) {
                timesteps[i] = (float) NumpyRanges.round((double) (steps - 1 - i) * ratio) + offset;
            }
        } else if ("trailing".equals(spacing)) {
            double[] a = NumpyRanges.arange(train, 0, -(train / (double) steps));
            if (a.length != steps) {
                throw new MobileSdException("trailing spacing gave " + a.length + " timesteps for " + steps + " steps",
                        "choose another number of steps");
            }
            for (int i = 0; i < steps; i++) {
                timesteps[i] = (float) NumpyRanges.round(a[i]) - 1f;
            }
        } else {
            throw SchedulerConfig.unsupported("euler", "timestep_spacing", spacing);
        }
        float[] trainSigmas = ns.trainingSigmas();
        sigmas = new float[steps + 1];
        float max = 0f;
        for (int i = 0; i < steps; i++) {
            sigmas[i] = (float) NumpyRanges.interpOnIndexGrid(timesteps[i], trainSigmas);
            max = Math.max(max, sigmas[i]);
        }
        sigmas[steps] = 0f;
        initNoiseSigma = ("linspace".equals(spacing) || "trailing".equals(spacing)) ? max
                : (float) Math.sqrt(max * max + 1f);
    }

    @Override
    public float[] timesteps() {
        return timesteps.clone();
    }

    @Override
    public float[] sigmas() {
        return sigmas.clone();
    }

    @Override
    public float initNoiseSigma() {
        return initNoiseSigma;
    }

    private void initStepIndex(float timestep) {
        if (stepIndex >= 0) {
            return;
        }
        int first = -1;
        for (int i = 0; i < timesteps.length; i++) {
            if (timesteps[i] == timestep) {
                if (first >= 0) {
                    stepIndex = i;   // duplicated timestep: diffusers takes the second occurrence
                    return;
                }
                first = i;
            }
        }
        if (first < 0) {
            throw new IllegalArgumentException("timestep " + timestep + " is not in the schedule");
        }
        stepIndex = first;
    }

    @Override
    public Tensor scaleModelInput(Tensor sample, float timestep) {
        initStepIndex(timestep);
        float sigma = sigmas[stepIndex];
        float denom = (float) Math.sqrt(sigma * sigma + 1f);
        float[] s = sample.floats();
        float[] out = new float[s.length];
        for (int i = 0; i < s.length; i++) {
            out[i] = s[i] / denom;
        }
        return Tensor.ofFloats(sample.shape(), out);
    }

    @Override
    public Tensor step(Tensor modelOutput, float timestep, Tensor sampleTensor, RandomSource random) {
        initStepIndex(timestep);
        float sigma = sigmas[stepIndex];
        float sigmaHat = sigma;   // sigma * (gamma + 1) with gamma = 0 at s_churn 0
        float[] s = sampleTensor.floats();
        float[] o = modelOutput.floats();
        float[] x0 = new float[s.length];
        if (prediction == PredictionType.EPSILON) {
            for (int i = 0; i < s.length; i++) {
                x0[i] = s[i] - sigmaHat * o[i];
            }
        } else {
            float c1 = -sigma / (float) Math.sqrt(sigma * sigma + 1f);
            float c2 = sigma * sigma + 1f;
            for (int i = 0; i < s.length; i++) {
                x0[i] = o[i] * c1 + s[i] / c2;
            }
        }
        float dt = sigmas[stepIndex + 1] - sigmaHat;
        float[] prev = new float[s.length];
        for (int i = 0; i < s.length; i++) {
            float derivative = (s[i] - x0[i]) / sigmaHat;
            prev[i] = s[i] + derivative * dt;
        }
        stepIndex++;
        return Tensor.ofFloats(sampleTensor.shape(), prev);
    }
}

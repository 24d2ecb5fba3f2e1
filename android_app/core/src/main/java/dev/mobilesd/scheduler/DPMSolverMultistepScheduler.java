package dev.mobilesd.scheduler;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.random.RandomSource;
import dev.mobilesd.runtime.Tensor;

/**
 * DPM-Solver++ multistep (diffusers {@code DPMSolverMultistepScheduler}): data prediction, solver order 1 or
 * 2 with the midpoint update, lower-order final steps, final sigma zero. The app's default scheduler.
 * Scalar coefficients and element-wise updates are float32 operations in diffusers' order.
 */
public final class DPMSolverMultistepScheduler implements Scheduler {
    private final float[] timesteps;
    private final float[] sigmas;
    private final int solverOrder;
    private final PredictionType prediction;
    private final float[][] modelOutputs;
    private int lowerOrderNums;
    private int stepIndex = -1;

    public DPMSolverMultistepScheduler(SchedulerConfig c, int steps) {
        if (steps < 1) {
            throw new MobileSdException("steps must be at least 1 (got " + steps + ")", "pass --steps 20, for example");
        }
        c.requireValue("algorithm_type", "dpmsolver++");
        c.requireValue("solver_type", "midpoint");
        c.requireValue("final_sigmas_type", "zero");
        c.requireOff("thresholding", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
                "use_flow_sigmas", "use_dynamic_shifting");
        if (!c.isNull("variance_type")) {
            throw SchedulerConfig.unsupported("dpm", "variance_type", c.string("variance_type"));
        }
        solverOrder = c.integer("solver_order");
        if (solverOrder != 1 && solverOrder != 2) {
            throw SchedulerConfig.unsupported("dpm", "solver_order", solverOrder);
        }
        // lower_order_final / euler_at_final only matter for order 3 or a non-zero final sigma: both refused above
        prediction = c.predictionType();
        NoiseSchedule ns = NoiseSchedule.fromConfig(c);
        int train = c.integer("num_train_timesteps");
        int lastTimestep = train;   // lambda_min_clipped = -inf clips nothing
        String spacing = c.string("timestep_spacing");
        double[] t;
        if ("linspace".equals(spacing)) {
            double[] lin = NumpyRanges.linspace(0, lastTimestep - 1, steps + 1, true);
            t = new double[steps];
            for (int i = 0; i < steps; i++) {
                t[i] = NumpyRanges.round(lin[steps - i]);
            }
        } else if ("leading".equals(spacing)) {
            int ratio = lastTimestep / (steps + 1);
            t = new double[steps];
            for (int i = 0; i < steps; i++) {
                t[i] = NumpyRanges.round((double) (steps - i) * ratio) + c.integer("steps_offset");
            }
        } else if ("trailing".equals(spacing)) {
            double ratio = train / (double) steps;
            double[] a = NumpyRanges.arange(lastTimestep, 0, -ratio);
            t = new double[a.length];
            for (int i = 0; i < a.length; i++) {
                t[i] = NumpyRanges.round(a[i]) - 1;
            }
        } else {
            throw SchedulerConfig.unsupported("dpm", "timestep_spacing", spacing);
        }
        float[] trainSigmas = ns.trainingSigmas();
        timesteps = new float[t.length];
        sigmas = new float[t.length + 1];
        for (int i = 0; i < t.length; i++) {
            timesteps[i] = (float) (long) t[i];
            sigmas[i] = (float) NumpyRanges.interpOnIndexGrid((long) t[i], trainSigmas);
        }
        sigmas[t.length] = 0f;
        modelOutputs = new float[solverOrder][];
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
        return 1f;
    }

    @Override
    public Tensor scaleModelInput(Tensor sample, float timestep) {
        return sample;
    }

    private int indexForTimestep(float timestep) {
        int first = -1;
        for (int i = 0; i < timesteps.length; i++) {
            if (timesteps[i] == timestep) {
                if (first >= 0) {
                    return i;   // a duplicated timestep: diffusers takes the second occurrence
                }
                first = i;
            }
        }
        return first >= 0 ? first : timesteps.length - 1;
    }

    private static float alpha(float sigma) {
        return 1f / (float) Math.sqrt(sigma * sigma + 1f);
    }

    private static float log(float x) {
        return (float) Math.log(x);
    }

    @Override
    public Tensor step(Tensor modelOutput, float timestep, Tensor sampleTensor, RandomSource random) {
        if (stepIndex < 0) {
            stepIndex = indexForTimestep(timestep);
        }
        boolean lastStep = stepIndex == timesteps.length - 1;   // final sigma zero: first order at the end
        float[] sample = sampleTensor.floats();
        float[] out = modelOutput.floats();

        // convert_model_output: the data prediction x0
        float sigma = sigmas[stepIndex];
        float alphaT = alpha(sigma);
        float sigmaT = sigma * alphaT;
        float[] x0 = new float[sample.length];
        if (prediction == PredictionType.EPSILON) {
            for (int i = 0; i < x0.length; i++) {
                x0[i] = (sample[i] - sigmaT * out[i]) / alphaT;
            }
        } else {
            for (int i = 0; i < x0.length; i++) {
                x0[i] = alphaT * sample[i] - sigmaT * out[i];
            }
        }
        for (int i = 0; i + 1 < solverOrder; i++) {
            modelOutputs[i] = modelOutputs[i + 1];
        }
        modelOutputs[solverOrder - 1] = x0;

        float[] prev;
        if (solverOrder == 1 || lowerOrderNums < 1 || lastStep) {
            prev = firstOrder(x0, sample);
        } else {
            prev = secondOrder(sample);
        }
        if (lowerOrderNums < solverOrder) {
            lowerOrderNums++;
        }
        stepIndex++;
        return Tensor.ofFloats(sampleTensor.shape(), prev);
    }

    private float[] firstOrder(float[] x0, float[] sample) {
        float sigT = sigmas[stepIndex + 1];
        float sigS = sigmas[stepIndex];
        float alphaT = alpha(sigT);
        float sigmaT = sigT * alphaT;
        float alphaS = alpha(sigS);
        float sigmaS = sigS * alphaS;
        float lambdaT = log(alphaT) - log(sigmaT);
        float lambdaS = log(alphaS) - log(sigmaS);
        float h = lambdaT - lambdaS;
        float a = sigmaT / sigmaS;
        float b = alphaT * ((float) Math.exp(-h) - 1f);
        float[] x = new float[sample.length];
        for (int i = 0; i < x.length; i++) {
            x[i] = a * sample[i] - b * x0[i];
        }
        return x;
    }

    /** The multistep midpoint update: D0 = m0, D1 = (m0 - m1) / r0. */
    private float[] secondOrder(float[] sample) {
        float sigT = sigmas[stepIndex + 1];
        float sigS0 = sigmas[stepIndex];
        float sigS1 = sigmas[stepIndex - 1];
        float alphaT = alpha(sigT);
        float sigmaT = sigT * alphaT;
        float alphaS0 = alpha(sigS0);
        float sigmaS0 = sigS0 * alphaS0;
        float alphaS1 = alpha(sigS1);
        float sigmaS1 = sigS1 * alphaS1;
        float lambdaT = log(alphaT) - log(sigmaT);
        float lambdaS0 = log(alphaS0) - log(sigmaS0);
        float lambdaS1 = log(alphaS1) - log(sigmaS1);
        float[] m0 = modelOutputs[solverOrder - 1];
        float[] m1 = modelOutputs[solverOrder - 2];
        float h = lambdaT - lambdaS0;
        float h0 = lambdaS0 - lambdaS1;
        float r0 = h0 / h;
        float d1Scale = 1f / r0;
        float a = sigmaT / sigmaS0;
        float b = alphaT * ((float) Math.exp(-h) - 1f);
        float halfB = 0.5f * b;
        float[] x = new float[sample.length];
        for (int i = 0; i < x.length; i++) {
            float d1 = d1Scale * (m0[i] - m1[i]);
            x[i] = (a * sample[i] - b * m0[i]) - halfB * d1;
        }
        return x;
    }
}

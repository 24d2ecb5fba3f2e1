package dev.mobilesd.scheduler;

import dev.mobilesd.MobileSdException;

/**
 * The training noise schedule every scheduler starts from: betas, alphas = 1 - betas and their cumulative
 * product, in float32 as diffusers builds them with torch (linspace as ATen computes it on CPU, with its fused
 * multiply-adds; cumprod accumulated in double and stored as float, as ATen's CPU kernel does).
 */
final class NoiseSchedule {
    final float[] betas;
    final float[] alphasCumprod;

    private NoiseSchedule(float[] betas) {
        this.betas = betas;
        this.alphasCumprod = new float[betas.length];
        double acc = 1.0;
        for (int i = 0; i < betas.length; i++) {
            acc *= (1f - betas[i]);
            alphasCumprod[i] = (float) acc;
        }
    }

    static NoiseSchedule fromConfig(SchedulerConfig c) {
        c.requireOff("rescale_betas_zero_snr");
        int n = c.integer("num_train_timesteps");
        double[] trained = c.trainedBetas();
        if (trained != null) {
            float[] b = new float[trained.length];
            for (int i = 0; i < b.length; i++) {
                b[i] = (float) trained[i];
            }
            return new NoiseSchedule(b);
        }
        String schedule = c.string("beta_schedule");
        double start = c.number("beta_start");
        double end = c.number("beta_end");
        if ("linear".equals(schedule)) {
            return new NoiseSchedule(torchLinspace((float) start, (float) end, n));
        }
        if ("scaled_linear".equals(schedule)) {
            float[] b = torchLinspace((float) Math.sqrt(start), (float) Math.sqrt(end), n);
            for (int i = 0; i < n; i++) {
                b[i] = b[i] * b[i];
            }
            return new NoiseSchedule(b);
        }
        throw SchedulerConfig.unsupported(c.scheduler, "beta_schedule", schedule);
    }

    /** {@code torch.linspace(start, end, n, dtype=float32)} on CPU: first half from start, second half from end. */
    static float[] torchLinspace(float start, float end, int n) {
        if (n < 2) {
            throw new MobileSdException("num_train_timesteps " + n + " is too small", "re-export the bundle");
        }
        float step = (end - start) / (float) (n - 1);
        int halfway = n / 2;
        float[] out = new float[n];
        for (int i = 0; i < n; i++) {
            out[i] = i < halfway ? dev.mobilesd.random.FloatFma.fma(step, (float) i, start)
                    : dev.mobilesd.random.FloatFma.fma(-step, (float) (n - i - 1), end);
        }
        return out;
    }

    /** {@code ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5} in float32. */
    float[] trainingSigmas() {
        float[] s = new float[alphasCumprod.length];
        for (int i = 0; i < s.length; i++) {
            float a = alphasCumprod[i];
            s[i] = (float) Math.sqrt((1f - a) / a);
        }
        return s;
    }
}

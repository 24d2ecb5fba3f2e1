package dev.mobilesd.scheduler;

/**
 * numpy's {@code linspace}, {@code arange} and {@code round} as diffusers' {@code set_timesteps} uses them,
 * computed the way numpy computes them (double precision, round half to even), so the timesteps match exactly.
 */
final class NumpyRanges {
    private NumpyRanges() {
    }

    /** {@code np.linspace(start, stop, num, endpoint)}: i * step + start, the last one set to stop. */
    static double[] linspace(double start, double stop, int num, boolean endpoint) {
        double[] y = new double[num];
        int div = endpoint ? num - 1 : num;
        double delta = stop - start;
        if (div > 0) {
            double step = delta / div;
            for (int i = 0; i < num; i++) {
                y[i] = step == 0 ? (i / (double) div) * delta + start : i * step + start;
            }
        } else {
            for (int i = 0; i < num; i++) {
                y[i] = i * delta + start;
            }
        }
        if (endpoint && num > 1) {
            y[num - 1] = stop;
        }
        return y;
    }

    /** {@code np.arange(start, stop, step)} for float steps: length ceil((stop - start) / step), then start + i * delta. */
    static double[] arange(double start, double stop, double step) {
        int n = (int) Math.ceil((stop - start) / step);
        if (n <= 0) {
            return new double[0];
        }
        double[] y = new double[n];
        y[0] = start;
        if (n > 1) {
            y[1] = start + step;
            double delta = y[1] - y[0];
            for (int i = 2; i < n; i++) {
                y[i] = start + i * delta;
            }
        }
        return y;
    }

    /** {@code np.round}: half to even. */
    static double round(double x) {
        return Math.rint(x);
    }

    static double[] reversed(double[] a) {
        double[] out = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            out[i] = a[a.length - 1 - i];
        }
        return out;
    }

    /** {@code np.interp(x, arange(len(fp)), fp)} for 0 <= x <= len(fp) - 1 (the integer grid the schedulers use). */
    static double interpOnIndexGrid(double x, float[] fp) {
        int last = fp.length - 1;
        if (x <= 0) {
            return fp[0];
        }
        if (x >= last) {
            return fp[last];
        }
        int j = (int) Math.floor(x);
        if (x == j) {
            return fp[j];
        }
        double slope = ((double) fp[j + 1] - (double) fp[j]) / 1.0;
        return slope * (x - j) + fp[j];
    }
}

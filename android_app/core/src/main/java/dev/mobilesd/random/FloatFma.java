package dev.mobilesd.random;

/**
 * float32 fused multiply-add, rounded once: what ATen's AVX code computes where the compiler contracts
 * {@code a * b + c}. {@code Math.fma(float, float, float)} does the same but only exists on Android from
 * API 33, so it is computed here from doubles (the same method as {@code mobilesd/torch_random.py:_fma}):
 * a * b is exact in double; the double sum is corrected where rounding it to float would round twice.
 * The unit tests compare it with {@code Math.fma} on the JVM.
 */
public final class FloatFma {
    private FloatFma() {
    }

    public static float fma(float a, float b, float c) {
        double p = (double) a * (double) b;          // exact: 24 + 24 bits fit in 53
        double s = p + c;
        double bp = s - c;                             // TwoSum: s + err == p + c exactly
        double err = (p - bp) + (c - (s - bp));
        float r = (float) s;
        if (err != 0 && (double) r != s && !Double.isInfinite(s)) {
            float other = (double) r < s ? Math.nextUp(r) : Math.nextDown(r);
            // s lies exactly halfway between two floats while the exact sum does not: round towards it
            if (((double) r + (double) other) / 2 == s) {
                return err > 0 ? Math.max(r, other) : Math.min(r, other);
            }
        }
        return r;
    }
}

package dev.mobilesd.random;

/**
 * The Cephes float32 {@code log} and {@code sin}/{@code cos} of ATen's {@code avx_mathfun.h}, operation by
 * operation in float arithmetic with the fused multiply-adds the AVX2 / AVX-512 build contracts (the
 * specification is {@code mobilesd/torch_random.py}). Constants are rounded from double to float exactly
 * as numpy's {@code np.float32(literal)} does.
 */
final class CephesFloat {
    private static final float[] LOG_P = {(float) 7.0376836292e-2, (float) -1.1514610310e-1, (float) 1.1676998740e-1,
        (float) -1.2420140846e-1, (float) 1.4249322787e-1, (float) -1.6668057665e-1, (float) 2.0000714765e-1,
        (float) -2.4999993993e-1, (float) 3.3333331174e-1};
    private static final float LOG_Q1 = (float) -2.12194440e-4;
    private static final float LOG_Q2 = (float) 0.693359375;
    private static final float SQRTHF = (float) 0.707106781186547524;
    private static final float FOPI = (float) 1.27323954473516;
    private static final float[] DP = {(float) -0.78515625, (float) -2.4187564849853515625e-4,
        (float) -3.77489497744594108e-8};
    private static final float[] SIN_P = {(float) -1.9515295891e-4, (float) 8.3321608736e-3, (float) -1.6666654611e-1};
    private static final float[] COS_P = {(float) 2.443315711809948e-5, (float) -1.388731625493765e-3,
        (float) 4.166664568298827e-2};
    private static final float MIN_NORMAL = Float.intBitsToFloat(0x00800000);

    private CephesFloat() {
    }

    private static float fma(float a, float b, float c) {
        return FloatFma.fma(a, b, c);
    }

    /** logf for x in (0, 1]. */
    static float log(float x) {
        x = Math.max(x, MIN_NORMAL);
        int bits = Float.floatToRawIntBits(x);
        float e = (float) ((bits >>> 23) - 0x7F);
        x = Float.intBitsToFloat((bits & 0x807FFFFF) | 0x3F000000);   // mantissa in [0.5, 1)
        e = e + 1f;
        boolean small = x < SQRTHF;
        if (small) {
            e = e - 1f;
        }
        x = (x - 1f) + (small ? x : 0f);        // x - 1, or x + x - 1 below sqrt(1/2)
        float z = x * x;
        float y = LOG_P[0];
        for (int i = 1; i < LOG_P.length; i++) {
            y = fma(y, x, LOG_P[i]);
        }
        y = y * x;
        y = fma(y, z, e * LOG_Q1);
        y = fma(-z, 0.5f, y);
        return fma(e, LOG_Q2, x + y);
    }

    /** sinf and cosf with one range reduction: writes sin to out[0], cos to out[1]. */
    static void sincos(float x, float[] out) {
        boolean sinNegative = (Float.floatToRawIntBits(x) & 0x80000000) != 0;
        x = Math.abs(x);
        int j = (int) (x * FOPI);               // truncation
        j = (j + 1) & ~1;
        float y = (float) j;
        if ((j & 4) != 0) {
            sinNegative = !sinNegative;
        }
        boolean cosNegative = (~(j - 2) & 4) != 0;
        boolean firstPoly = (j & 2) == 0;       // the cos polynomial gives cos (else the two swap)
        for (float dp : DP) {
            x = fma(y, dp, x);
        }
        float z = x * x;
        float yc = COS_P[0];
        yc = fma(yc, z, COS_P[1]);
        yc = fma(yc, z, COS_P[2]);
        yc = yc * z;
        yc = fma(yc, z, -(z * 0.5f)) + 1f;
        float ys = SIN_P[0];
        ys = fma(ys, z, SIN_P[1]);
        ys = fma(ys, z, SIN_P[2]);
        ys = fma(ys * z, x, x);
        float s = firstPoly ? ys : yc;
        float c = firstPoly ? yc : ys;
        out[0] = sinNegative ? -s : s;
        out[1] = cosNegative ? -c : c;
    }
}

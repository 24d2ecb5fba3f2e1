package dev.mobilesd.random;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The double-based float FMA (for Android below API 33) against the JVM's Math.fma, bit for bit. */
class FloatFmaTest {
    private static void same(float a, float b, float c) {
        float want = Math.fma(a, b, c);
        float got = FloatFma.fma(a, b, c);
        assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(got),
                "fma(" + a + ", " + b + ", " + c + "): Math.fma " + want + ", FloatFma " + got);
    }

    @Test
    void randomOperandsOfEveryMagnitude() {
        SplittableRandom r = new SplittableRandom(7);
        for (int i = 0; i < 2_000_000; i++) {
            float a = Float.intBitsToFloat(r.nextInt());
            float b = Float.intBitsToFloat(r.nextInt());
            float c = Float.intBitsToFloat(r.nextInt());
            if (Float.isFinite(a) && Float.isFinite(b) && Float.isFinite(c) && Float.isFinite(Math.fma(a, b, c))) {
                same(a, b, c);
            }
        }
    }

    @Test
    void operandsInTheRangeTheSamplerUses() {
        // the Cephes polynomials: |x| < 1, coefficients ~1e-4..1, products that nearly cancel
        SplittableRandom r = new SplittableRandom(11);
        for (int i = 0; i < 2_000_000; i++) {
            float a = (float) (r.nextDouble() * 2 - 1);
            float b = (float) (r.nextDouble() * 2 - 1);
            float c = -a * b + (float) ((r.nextDouble() - 0.5) * Math.ulp(a * b) * 8);
            same(a, b, c);
        }
    }

    @Test
    void halfwayCasesWhereDoubleRoundingWouldBeWrong() {
        // a*b + c exactly halfway between two floats in double, with a tiny correction term below double precision
        float one = 1f;
        float halfUlp = Math.ulp(one) / 2;
        same(1f + Math.ulp(1f), 1f + Math.ulp(1f), -1f);
        same(one, one, halfUlp);
        same(1f + halfUlp * 2, 1f - halfUlp, halfUlp);
        same(Float.MIN_VALUE, 0.5f, 1e-45f);
        same(-0f, 1f, 0f);
        same(0f, 1f, -0f);
    }
}

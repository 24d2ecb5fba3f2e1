package dev.mobilesd.random;

/**
 * torch's CPU {@code torch.randn} (float32) for a seed, bit for bit, so a seed names the same image on the
 * phone and on the host. A port of {@code mobilesd/torch_random.py}, which is checked against torch:
 *
 * <ul>
 *   <li>16 elements or more: 24-bit uniforms {@code (u32 & 0xFFFFFF) * 2^-24} for every element, then Box-Muller
 *       over blocks of 16 (lane j pairs element j, radius from log(1 - u), with element j + 8, angle 2 pi u),
 *       with ATen's Cephes float log / sin / cos; when the size is not a multiple of 16, 16 fresh uniforms
 *       recompute the last 16 elements.</li>
 *   <li>fewer than 16: one double-precision normal per element from two 53-bit uniforms, the second Box-Muller
 *       value kept for the next scalar draw.</li>
 * </ul>
 * Matches torch on x86 hosts with AVX2 / AVX-512 (the golden vectors' {@code cpu_capability}).
 */
public final class TorchRandomSource implements RandomSource {
    private static final float TWO_PI = (float) (2 * Math.PI);
    private static final float INV_2_24 = (float) Math.pow(2, -24);
    private final MersenneTwister mt;
    private boolean hasCachedNormal;
    private double cachedNormal;
    private final float[] sincos = new float[2];

    public TorchRandomSource(long seed) {
        this.mt = new MersenneTwister(seed);
    }

    @Override
    public float[] normalArray(int n) {
        float[] data = new float[n];
        if (n < 16) {
            for (int i = 0; i < n; i++) {
                data[i] = (float) normalDouble();
            }
            return data;
        }
        for (int i = 0; i < n; i++) {
            data[i] = uniform();
        }
        for (int i = 0; i + 16 <= n; i += 16) {
            boxMuller16(data, i, data, i);
        }
        if (n % 16 != 0) {
            float[] fresh = new float[16];
            for (int i = 0; i < 16; i++) {
                fresh[i] = uniform();
            }
            boxMuller16(fresh, 0, data, n - 16);
        }
        return data;
    }

    private float uniform() {
        return (float) (mt.nextU32() & 0xFFFFFF) * INV_2_24;
    }

    private void boxMuller16(float[] in, int from, float[] out, int to) {
        float[] u = new float[16];
        System.arraycopy(in, from, u, 0, 16);
        for (int j = 0; j < 8; j++) {
            float radius = (float) Math.sqrt(-2f * CephesFloat.log(1f - u[j]));
            float theta = TWO_PI * u[j + 8];
            CephesFloat.sincos(theta, sincos);
            out[to + j] = radius * sincos[1];
            out[to + j + 8] = radius * sincos[0];
        }
    }

    private double normalDouble() {
        if (hasCachedNormal) {
            hasCachedNormal = false;
            return cachedNormal;
        }
        double u1 = (mt.nextU64() & ((1L << 53) - 1)) * 0x1.0p-53;
        double u2 = (mt.nextU64() & ((1L << 53) - 1)) * 0x1.0p-53;
        double r = StrictMath.sqrt(-2.0 * StrictMath.log1p(-u2));
        double theta = 2.0 * Math.PI * u1;
        cachedNormal = r * StrictMath.sin(theta);
        hasCachedNormal = true;
        return r * StrictMath.cos(theta);
    }
}

package dev.mobilesd.random;

/** The 32-bit Mersenne Twister (mt19937) as torch's CPU generator runs it: {@code manual_seed} is {@code init_genrand}. */
public final class MersenneTwister {
    private static final int N = 624;
    private static final int M = 397;
    private final int[] mt = new int[N];
    private int index;

    public MersenneTwister(long seed) {
        mt[0] = (int) seed;   // the low 32 bits, as torch's mt19937 seeds
        for (int i = 1; i < N; i++) {
            mt[i] = 1812433253 * (mt[i - 1] ^ (mt[i - 1] >>> 30)) + i;
        }
        index = N;
    }

    private void twist() {
        for (int i = 0; i < N; i++) {
            int y = (mt[i] & 0x80000000) | (mt[(i + 1) % N] & 0x7FFFFFFF);
            mt[i] = mt[(i + M) % N] ^ (y >>> 1) ^ ((y & 1) != 0 ? 0x9908B0DF : 0);
        }
        index = 0;
    }

    /** The next 32-bit output, as an unsigned value in a long. */
    public long nextU32() {
        if (index >= N) {
            twist();
        }
        int y = mt[index++];
        y ^= y >>> 11;
        y ^= (y << 7) & 0x9D2C5680;
        y ^= (y << 15) & 0xEFC60000;
        y ^= y >>> 18;
        return y & 0xFFFFFFFFL;
    }

    /** torch's {@code random64()}: two draws, the first one high. */
    public long nextU64() {
        long hi = nextU32();
        return (hi << 32) | nextU32();
    }
}

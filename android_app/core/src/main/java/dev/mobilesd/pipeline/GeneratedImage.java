package dev.mobilesd.pipeline;

import dev.mobilesd.runtime.Tensor;

/** A decoded image: ARGB pixels (Android's Bitmap layout), from the decoder's [1, H, W, 3] output in [0, 1]. */
public final class GeneratedImage {
    public final int width;
    public final int height;
    private final int[] argb;

    private GeneratedImage(int width, int height, int[] argb) {
        this.width = width;
        this.height = height;
        this.argb = argb;
    }

    /** {@code round(x * 255)} per channel, as diffusers' image processor (and the manifest's image.to_uint8) does. */
    public static GeneratedImage fromNhwc(Tensor image) {
        int[] s = image.shape();
        if (s.length != 4 || s[0] != 1 || s[3] != 3) {
            throw new IllegalArgumentException("decoder output " + image + " is not [1, H, W, 3]");
        }
        float[] x = image.floats();
        int h = s[1];
        int w = s[2];
        int[] px = new int[h * w];
        for (int i = 0; i < px.length; i++) {
            px[i] = 0xFF000000 | (toByte(x[3 * i]) << 16) | (toByte(x[3 * i + 1]) << 8) | toByte(x[3 * i + 2]);
        }
        return new GeneratedImage(w, h, px);
    }

    private static int toByte(float v) {
        double r = Math.rint(v * 255f);   // numpy's round: half to even; the graph's output is already in [0, 1]
        return (int) Math.max(0, Math.min(255, r));
    }

    /** The pixels, row by row, 0xAARRGGBB (a copy). */
    public int[] argb() {
        return argb.clone();
    }
}

package dev.mobilesd.litert;

import com.sun.jna.Pointer;
import dev.mobilesd.bundle.TensorSpec;
import dev.mobilesd.runtime.Tensor;

/**
 * Copies between Java tensors and a locked LiteRT tensor buffer's host memory (packed, C order). Kept apart
 * so the overhead benchmark can time exactly these copies for SD1.5-sized tensors.
 */
public final class TensorBufferCopy {
    private TensorBufferCopy() {
    }

    public static void write(Pointer host, Tensor t) {
        if (t.dtype() == Tensor.DType.FLOAT32) {
            float[] a = t.floats();
            host.write(0, a, 0, a.length);
        } else {
            int[] a = t.ints();
            host.write(0, a, 0, a.length);
        }
    }

    public static Tensor read(Pointer host, TensorSpec spec) {
        int n = spec.elementCount();
        if (spec.dtype == Tensor.DType.FLOAT32) {
            float[] a = new float[n];
            host.read(0, a, 0, n);
            return Tensor.ofFloats(spec.shape(), a);
        }
        int[] a = new int[n];
        host.read(0, a, 0, n);
        return Tensor.ofInts(spec.shape(), a);
    }
}

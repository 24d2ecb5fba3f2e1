package dev.mobilesd.runtime;

import java.util.Arrays;

/**
 * A dense tensor in C order: float32 or int32, the only dtypes a bundle's graph boundaries use.
 * The data array is owned by the tensor; operations that change values return new tensors.
 */
public final class Tensor {
    public enum DType {
        FLOAT32("float32"), INT32("int32");

        public final String manifestName;

        DType(String manifestName) {
            this.manifestName = manifestName;
        }

        public static DType fromManifest(String name) {
            for (DType d : values()) {
                if (d.manifestName.equals(name)) {
                    return d;
                }
            }
            throw new IllegalArgumentException("unknown dtype " + name);
        }
    }

    private final int[] shape;
    private final float[] floats;
    private final int[] ints;

    private Tensor(int[] shape, float[] floats, int[] ints) {
        this.shape = shape.clone();
        this.floats = floats;
        this.ints = ints;
        int n = elementCount(shape);
        int have = floats != null ? floats.length : ints.length;
        if (have != n) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " holds " + n
                    + " elements, data has " + have);
        }
    }

    public static Tensor ofFloats(int[] shape, float[] data) {
        return new Tensor(shape, data, null);
    }

    public static Tensor ofInts(int[] shape, int[] data) {
        return new Tensor(shape, null, data);
    }

    public static Tensor zeros(int[] shape) {
        return new Tensor(shape, new float[elementCount(shape)], null);
    }

    public static int elementCount(int[] shape) {
        long n = 1;
        for (int d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
            }
            n *= d;
        }
        if (n > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("tensor too large: " + Arrays.toString(shape));
        }
        return (int) n;
    }

    public DType dtype() {
        return floats != null ? DType.FLOAT32 : DType.INT32;
    }

    public int[] shape() {
        return shape.clone();
    }

    public int dim(int i) {
        return shape[i];
    }

    public int rank() {
        return shape.length;
    }

    public int elementCount() {
        return floats != null ? floats.length : ints.length;
    }

    /** The backing array (not a copy): float32 tensors only. */
    public float[] floats() {
        if (floats == null) {
            throw new IllegalStateException("int32 tensor has no float data");
        }
        return floats;
    }

    /** The backing array (not a copy): int32 tensors only. */
    public int[] ints() {
        if (ints == null) {
            throw new IllegalStateException("float32 tensor has no int data");
        }
        return ints;
    }

    public boolean hasShape(int[] other) {
        return Arrays.equals(shape, other);
    }

    /** Item {@code index} of the leading (batch) dimension, as a batch-1 tensor (a copy). */
    public Tensor batchItem(int index) {
        int per = elementCount() / shape[0];
        int[] s = shape.clone();
        s[0] = 1;
        if (floats != null) {
            return ofFloats(s, Arrays.copyOfRange(floats, index * per, (index + 1) * per));
        }
        return ofInts(s, Arrays.copyOfRange(ints, index * per, (index + 1) * per));
    }

    /** Concatenation along the leading (batch) dimension: the CFG batch [unconditional, conditional]. */
    public static Tensor concatBatch(Tensor a, Tensor b) {
        if (a.dtype() != DType.FLOAT32 || b.dtype() != DType.FLOAT32) {
            throw new IllegalArgumentException("concatBatch takes float32 tensors");
        }
        int[] sa = a.shape, sb = b.shape;
        if (sa.length != sb.length || !Arrays.equals(Arrays.copyOfRange(sa, 1, sa.length),
                Arrays.copyOfRange(sb, 1, sb.length))) {
            throw new IllegalArgumentException("cannot concatenate " + Arrays.toString(sa) + " and " + Arrays.toString(sb));
        }
        float[] out = new float[a.floats.length + b.floats.length];
        System.arraycopy(a.floats, 0, out, 0, a.floats.length);
        System.arraycopy(b.floats, 0, out, a.floats.length, b.floats.length);
        int[] s = sa.clone();
        s[0] = sa[0] + sb[0];
        return ofFloats(s, out);
    }

    @Override
    public String toString() {
        return "Tensor(" + dtype().manifestName + " " + Arrays.toString(shape) + ")";
    }
}

package dev.mobilesd.bundle;

import dev.mobilesd.runtime.Tensor;
import java.util.Arrays;

/** One graph input or output as the manifest declares it: name, shape, dtype. */
public final class TensorSpec {
    public final String name;
    private final int[] shape;
    public final Tensor.DType dtype;

    public TensorSpec(String name, int[] shape, Tensor.DType dtype) {
        this.name = name;
        this.shape = shape.clone();
        this.dtype = dtype;
    }

    public int[] shape() {
        return shape.clone();
    }

    public int elementCount() {
        return Tensor.elementCount(shape);
    }

    @Override
    public String toString() {
        return name + " " + dtype.manifestName + Arrays.toString(shape);
    }
}

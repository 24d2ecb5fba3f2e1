package dev.mobilesd.runtime;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * One loaded graph of a bundle, ready to run: the only thing the pipeline knows about the inference runtime.
 * Implementations: the LiteRT C API through JNA (desktop JVM and, with the same code, Android) and, in tests
 * and benchmarks, runners that replay recorded outputs.
 */
public interface GraphRunner extends AutoCloseable {
    /**
     * Runs the graph. Inputs are looked up by the manifest's input names; the result maps the manifest's
     * output names (in manifest order) to new tensors.
     */
    Map<String, Tensor> run(Map<String, Tensor> inputs);

    /**
     * Runs the graph for UNet chunk chaining. Inputs are tensors or values that {@code runChained} of another
     * runner from the same factory returned with {@code keepOutputs}; with {@code keepOutputs} the outputs stay
     * in the runtime's own buffers and come back as such values (valid until the runner that made them runs
     * again), so a tensor passed from one chunk to a later one is never copied through Java; without it they
     * come back as tensors. Runners that cannot keep buffers (the default here) copy, which gives the same
     * numbers.
     */
    default Map<String, Object> runChained(Map<String, Object> inputs, boolean keepOutputs) {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : inputs.entrySet()) {
            if (!(e.getValue() instanceof Tensor)) {
                throw new IllegalArgumentException("input '" + e.getKey() + "' is a runtime buffer of another runner "
                        + "kind; this runner takes tensors");
            }
            tensors.put(e.getKey(), (Tensor) e.getValue());
        }
        return new LinkedHashMap<>(run(tensors));
    }

    /** Frees the runtime's resources (weights, compiled kernels, buffers). Idempotent. */
    @Override
    void close();
}

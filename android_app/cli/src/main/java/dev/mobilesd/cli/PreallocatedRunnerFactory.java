package dev.mobilesd.cli;

import com.sun.jna.Memory;
import dev.mobilesd.bundle.GraphSpec;
import dev.mobilesd.bundle.TensorSpec;
import dev.mobilesd.litert.TensorBufferCopy;
import dev.mobilesd.runtime.Accelerator;
import dev.mobilesd.runtime.GraphRunner;
import dev.mobilesd.runtime.GraphRunnerFactory;
import dev.mobilesd.runtime.Tensor;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * For the overhead benchmark: graph "runners" that compute nothing and return outputs allocated once, so a
 * generation times only the core around the graphs. With {@link Copies#LIKE_LITERT_RUNNER} each call also does
 * what the LiteRT runner does besides the graph itself: every input that is a Java tensor copied into native
 * memory, every output copied out unless it stays in its buffer for a later chunk ({@link TensorBufferCopy} on
 * JNA memory of the tensor's size), timed separately; {@link Copies#WITHOUT_CHAINING} copies every chunk
 * tensor through Java (what chaining saves).
 */
final class PreallocatedRunnerFactory implements GraphRunnerFactory {
    /** What a call copies: nothing; what the LiteRT runner copies; or everything (no chunk chaining). */
    enum Copies { NONE, LIKE_LITERT_RUNNER, WITHOUT_CHAINING }

    private final Copies copies;
    private long runnerNanos;

    PreallocatedRunnerFactory(Copies copies) {
        this.copies = copies;
    }

    /** Total nanoseconds spent inside run() so far (the native-buffer copies; nothing else happens there). */
    long runnerNanos() {
        return runnerNanos;
    }

    @Override
    public GraphRunner open(GraphSpec spec, Path file) {
        Map<String, Tensor> outputs = new LinkedHashMap<>();
        Map<String, Memory> outBuffers = new HashMap<>();
        for (TensorSpec o : spec.outputs) {
            float[] data = new float[o.elementCount()];
            java.util.Arrays.fill(data, 0.01f);
            outputs.put(o.name, Tensor.ofFloats(o.shape(), data));
            Memory m = new Memory(4L * o.elementCount());
            m.clear();
            outBuffers.put(o.name, m);
        }
        Map<String, Memory> inBuffers = new HashMap<>();
        for (TensorSpec in : spec.inputs) {
            inBuffers.put(in.name, new Memory(4L * in.elementCount()));
        }
        return new GraphRunner() {
            @Override
            public Map<String, Tensor> run(Map<String, Tensor> inputs) {
                Map<String, Tensor> out = new LinkedHashMap<>();
                for (Map.Entry<String, Object> e : runChained(new LinkedHashMap<>(inputs), false).entrySet()) {
                    out.put(e.getKey(), (Tensor) e.getValue());
                }
                return out;
            }

            @Override
            public Map<String, Object> runChained(Map<String, Object> inputs, boolean keepOutputs) {
                long t0 = System.nanoTime();
                Map<String, Object> result = new LinkedHashMap<>(outputs);
                boolean keep = keepOutputs && copies == Copies.LIKE_LITERT_RUNNER;
                if (copies != Copies.NONE) {
                    // what the LiteRT runner copies: Java tensors in, outputs out unless they stay in their buffers
                    for (TensorSpec in : spec.inputs) {
                        Object v = inputs.get(in.name);
                        if (v instanceof Tensor) {
                            TensorBufferCopy.write(inBuffers.get(in.name), (Tensor) v);
                        } else if (!(v instanceof KeptBuffer)) {
                            throw new IllegalArgumentException("no input " + in.name);
                        }
                    }
                    for (TensorSpec o : spec.outputs) {
                        result.put(o.name, keep ? new KeptBuffer(o.name)
                                : TensorBufferCopy.read(outBuffers.get(o.name), o));
                    }
                }
                runnerNanos += System.nanoTime() - t0;
                return result;
            }

            @Override
            public void close() {
            }
        };
    }

    /** Stands for an output left in its native buffer (the LiteRT runner's OutputBuffer). */
    private static final class KeptBuffer {
        final String name;

        KeptBuffer(String name) {
            this.name = name;
        }
    }

    @Override
    public String runtimeDescription() {
        return "preallocated outputs (no graph compute)";
    }

    @Override
    public Accelerator accelerator() {
        return Accelerator.CPU;
    }
}

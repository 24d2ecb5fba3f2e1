package dev.mobilesd.pipeline;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.bundle.GraphSpec;
import dev.mobilesd.bundle.TensorSpec;
import dev.mobilesd.runtime.Tensor;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One UNet step, possibly cut into chunks that pass named tensors (docs/manifest.md, "Chunks pass named
 * tensors"): a dictionary starts with sample / timestep / encoder_hidden_states; after each chunk its outputs
 * are stored under their names and every {@code meta.aliases} entry {@code alias: source} stores the source
 * tensor under the alias too; each chunk's inputs are looked up by name. The last chunk's first output is
 * the noise (or v) prediction.
 */
public final class Unet {
    private final List<ManagedGraph> chunks;
    public final int batch;

    public Unet(List<ManagedGraph> chunks, int batch) {
        if (chunks.isEmpty()) {
            throw new IllegalArgumentException("a UNet has at least one graph");
        }
        this.chunks = Collections.unmodifiableList(new ArrayList<>(chunks));
        this.batch = batch;
        // every input must be a step input or made by an earlier chunk (directly or by alias)
        java.util.Set<String> known = new java.util.HashSet<>(java.util.Arrays.asList("sample", "timestep", "encoder_hidden_states"));
        for (ManagedGraph g : chunks) {
            for (TensorSpec in : g.spec.inputs) {
                if (!known.contains(in.name)) {
                    throw new MobileSdException("UNet graph " + g.spec.name + " reads '" + in.name + "', which no earlier "
                            + "chunk makes", "re-export the bundle (the manifest's chunk order or aliases are broken)");
                }
            }
            for (TensorSpec out : g.spec.outputs) {
                known.add(out.name);
            }
            known.addAll(g.spec.aliases.keySet());
        }
        TensorSpec sample = chunks.get(0).spec.input("sample");
        if (sample == null || sample.shape()[0] != batch) {
            throw new MobileSdException("the first UNet graph's sample input is " + sample + ", not batch " + batch,
                    "re-export the bundle (cfg.unet_batch and the graphs disagree)");
        }
    }

    public int chunkCount() {
        return chunks.size();
    }

    public GraphSpec chunkSpec(int i) {
        return chunks.get(i).spec;
    }

    List<ManagedGraph> graphs() {
        return chunks;
    }

    /**
     * Runs the chunks in order; {@code listener} gets each chunk's time as unet_chunk_&lt;i&gt;. Tensors passed
     * between chunks stay in the runtime's buffers (see {@link dev.mobilesd.runtime.GraphRunner#runChained});
     * only the last chunk's output comes back to Java.
     */
    public Tensor predictNoise(Tensor sample, float timestep, Tensor context, StageListener listener) {
        Map<String, Object> state = new HashMap<>();
        state.put("sample", sample);
        state.put("timestep", Tensor.ofFloats(new int[] {1}, new float[] {timestep}));
        state.put("encoder_hidden_states", context);
        Object last = null;
        for (int i = 0; i < chunks.size(); i++) {
            ManagedGraph g = chunks.get(i);
            boolean isLast = i == chunks.size() - 1;
            Map<String, Object> inputs = new LinkedHashMap<>();
            for (TensorSpec in : g.spec.inputs) {
                inputs.put(in.name, state.get(in.name));
            }
            long t0 = System.nanoTime();
            Map<String, Object> outputs = g.runChained(inputs, !isLast);
            listener.onStage("unet_chunk_" + i, (System.nanoTime() - t0) / 1e9);
            state.putAll(outputs);
            for (Map.Entry<String, String> alias : g.spec.aliases.entrySet()) {
                state.put(alias.getKey(), state.get(alias.getValue()));
            }
            last = outputs.get(g.spec.outputs.get(0).name);
        }
        return (Tensor) last;
    }
}

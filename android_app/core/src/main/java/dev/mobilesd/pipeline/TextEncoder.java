package dev.mobilesd.pipeline;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.bundle.TensorSpec;
import dev.mobilesd.runtime.Tensor;
import dev.mobilesd.tokenizer.BPETokenizer;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/** Tokenizer + text encoder graph: a prompt to its [1, 77, D] hidden states. */
public final class TextEncoder {
    private final BPETokenizer tokenizer;
    final ManagedGraph graph;
    private final TensorSpec idsInput;

    public TextEncoder(BPETokenizer tokenizer, ManagedGraph graph) {
        this.tokenizer = tokenizer;
        this.graph = graph;
        if (graph.spec.inputs.size() != 1 || graph.spec.inputs.get(0).dtype != Tensor.DType.INT32) {
            throw new MobileSdException("text encoder graph must take one int32 input (input_ids), it takes "
                    + graph.spec.inputs, "re-export the bundle");
        }
        idsInput = graph.spec.inputs.get(0);
        int[] shape = idsInput.shape();
        if (shape.length != 2 || shape[0] != 1 || shape[1] != tokenizer.maxLength) {
            throw new MobileSdException("text encoder input " + idsInput + " does not take [1, " + tokenizer.maxLength
                    + "] ids", "re-export the bundle");
        }
    }

    public int[] tokenize(String prompt) {
        return tokenizer.encode(prompt);
    }

    public Tensor encode(String prompt) {
        return encodeIds(tokenize(prompt));
    }

    public Tensor encodeIds(int[] ids) {
        Map<String, Tensor> out = graph.run(Collections.singletonMap(idsInput.name, Tensor.ofInts(idsInput.shape(), ids)));
        return out.values().iterator().next();
    }

    List<ManagedGraph> graphs() {
        return Collections.singletonList(graph);
    }
}

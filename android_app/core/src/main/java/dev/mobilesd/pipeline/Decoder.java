package dev.mobilesd.pipeline;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.bundle.TensorSpec;
import dev.mobilesd.runtime.Tensor;
import java.util.Collections;
import java.util.List;

/** The VAE decoder graph: the sampler's latent (as is; the graph applies 1 / scaling_factor) to an NHWC image in [0, 1]. */
public final class Decoder {
    final ManagedGraph graph;
    private final TensorSpec latentInput;

    public Decoder(ManagedGraph graph) {
        this.graph = graph;
        if (graph.spec.inputs.size() != 1) {
            throw new MobileSdException("the decoder graph must take one input (latent), it takes " + graph.spec.inputs,
                    "re-export the bundle");
        }
        latentInput = graph.spec.inputs.get(0);
    }

    public GeneratedImage decode(Tensor latent) {
        Tensor image = graph.run(Collections.singletonMap(latentInput.name, latent)).values().iterator().next();
        return GeneratedImage.fromNhwc(image);
    }

    List<ManagedGraph> graphs() {
        return Collections.singletonList(graph);
    }
}

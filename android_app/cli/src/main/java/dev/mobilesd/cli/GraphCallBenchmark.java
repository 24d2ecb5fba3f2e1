package dev.mobilesd.cli;

import dev.mobilesd.benchmark.SampleTimer;
import dev.mobilesd.bundle.Bundle;
import dev.mobilesd.bundle.GraphSpec;
import dev.mobilesd.bundle.TensorSpec;
import dev.mobilesd.json.Json;
import dev.mobilesd.litert.LiteRtRunnerFactory;
import dev.mobilesd.runtime.Accelerator;
import dev.mobilesd.runtime.GraphRunner;
import dev.mobilesd.runtime.Tensor;
import java.nio.file.Paths;
import java.util.HashMap;
import java.util.Map;
import org.json.JSONObject;

/**
 * One graph of a bundle called many times through the core's LiteRT runner (JNA, CPU), each call timed:
 * with the same graph timed through Python's APIs in the same run (benchmarks/android_core_overhead.py), it
 * shows what the Java binding adds per call, independent of the machine's load at the time.
 */
public final class GraphCallBenchmark {
    private GraphCallBenchmark() {
    }

    public static void main(String[] args) {
        CliArguments a = new CliArguments(args);
        Bundle bundle = Bundle.open(Paths.get(a.get("--bundle")));
        GraphSpec spec = bundle.manifest.graph(a.get("--prompt"));   // --prompt names the graph here
        int calls = a.integer("--steps", 30);
        String lib = a.get("--litert-lib");
        try (LiteRtRunnerFactory f = new LiteRtRunnerFactory(lib, Paths.get(lib).getParent().toString(), Accelerator.CPU, false);
             GraphRunner r = f.open(spec, bundle.path(spec.file))) {
            Map<String, Tensor> inputs = new HashMap<>();
            for (TensorSpec in : spec.inputs) {
                inputs.put(in.name, in.dtype == Tensor.DType.INT32 ? Tensor.ofInts(in.shape(), new int[in.elementCount()])
                        : Tensor.zeros(in.shape()));
            }
            for (int k = 0; k < 5; k++) {
                r.run(inputs);
            }
            SampleTimer t = new SampleTimer();
            for (int k = 0; k < calls; k++) {
                t.start();
                r.run(inputs);
                t.stop();
            }
            JSONObject out = new JSONObject();
            Json.put(out, "graph", spec.name);
            Json.put(out, "calls", t.toStageJson(0));
            Json.writeAtomically(Paths.get(a.get("--out")), out);
        }
    }
}

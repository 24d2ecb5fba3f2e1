package dev.mobilesd.testing;

import dev.mobilesd.bundle.GraphSpec;
import dev.mobilesd.runtime.Accelerator;
import dev.mobilesd.runtime.GraphRunner;
import dev.mobilesd.runtime.GraphRunnerFactory;
import dev.mobilesd.runtime.Tensor;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/**
 * Graph runners for unit tests of the loop around the graphs: each graph name maps to a function from inputs
 * to outputs (e.g. replaying the golden trajectory's recorded UNet predictions). Opens and closes are counted
 * so resource-manager tests can see what was resident.
 */
public final class ScriptedRunners implements GraphRunnerFactory {
    private final Map<String, Function<Map<String, Tensor>, Map<String, Tensor>>> graphs = new HashMap<>();
    public final List<String> opened = new ArrayList<>();
    public final List<String> closed = new ArrayList<>();
    public final Map<String, Integer> calls = new HashMap<>();

    public ScriptedRunners on(String graph, Function<Map<String, Tensor>, Map<String, Tensor>> fn) {
        graphs.put(graph, fn);
        return this;
    }

    public int resident() {
        return opened.size() - closed.size();
    }

    @Override
    public GraphRunner open(GraphSpec spec, Path file) {
        Function<Map<String, Tensor>, Map<String, Tensor>> fn = graphs.get(spec.name);
        if (fn == null) {
            throw new IllegalStateException("no scripted graph " + spec.name);
        }
        opened.add(spec.name);
        return new GraphRunner() {
            private boolean isClosed;

            @Override
            public Map<String, Tensor> run(Map<String, Tensor> inputs) {
                if (isClosed) {
                    throw new IllegalStateException(spec.name + " is closed");
                }
                calls.merge(spec.name, 1, Integer::sum);
                return fn.apply(inputs);
            }

            @Override
            public void close() {
                if (!isClosed) {
                    isClosed = true;
                    closed.add(spec.name);
                }
            }
        };
    }

    @Override
    public String runtimeDescription() {
        return "scripted test runners";
    }

    @Override
    public Accelerator accelerator() {
        return Accelerator.CPU;
    }

    public static Map<String, Tensor> one(String name, Tensor t) {
        Map<String, Tensor> m = new HashMap<>();
        m.put(name, t);
        return m;
    }
}

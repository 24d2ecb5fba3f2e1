package dev.mobilesd.pipeline;

import dev.mobilesd.bundle.GraphSpec;
import dev.mobilesd.runtime.GraphRunner;
import dev.mobilesd.runtime.GraphRunnerFactory;
import dev.mobilesd.runtime.Tensor;
import java.nio.file.Path;
import java.util.Map;

/**
 * One graph that can be loaded and unloaded on demand (Apple's {@code ManagedMLModel}): the runner is opened
 * on first use and closed by {@link #unload}, so the resource manager decides what stays resident.
 */
public final class ManagedGraph {
    public final GraphSpec spec;
    private final Path file;
    private final GraphRunnerFactory factory;
    private GraphRunner runner;

    public ManagedGraph(GraphSpec spec, Path file, GraphRunnerFactory factory) {
        this.spec = spec;
        this.file = file;
        this.factory = factory;
    }

    public synchronized boolean isLoaded() {
        return runner != null;
    }

    /** Opens the graph if it is not open; returns the seconds that took (0 when it was loaded). */
    public synchronized double load() {
        if (runner != null) {
            return 0;
        }
        long t0 = System.nanoTime();
        runner = factory.open(spec, file);
        return (System.nanoTime() - t0) / 1e9;
    }

    public synchronized void unload() {
        if (runner != null) {
            runner.close();
            runner = null;
        }
    }

    public synchronized Map<String, Object> runChained(Map<String, Object> inputs, boolean keepOutputs) {
        if (runner == null) {
            throw new IllegalStateException("graph " + spec.name + " is not loaded (the resource manager loads it)");
        }
        return runner.runChained(inputs, keepOutputs);
    }

    public synchronized Map<String, Tensor> run(Map<String, Tensor> inputs) {
        if (runner == null) {
            throw new IllegalStateException("graph " + spec.name + " is not loaded (the resource manager loads it)");
        }
        return runner.run(inputs);
    }
}

package dev.mobilesd.pipeline;

import java.util.ArrayList;
import java.util.List;

/**
 * Decides which graphs stay resident (Apple's {@code ResourceManaging}, the Mobile Stable Diffusion papers'
 * stage-by-stage loading): {@link Policy#KEEP_LOADED} opens every graph once and keeps it; {@link Policy#LOW_MEMORY}
 * opens a stage's graphs (text encoder; all UNet chunks; decoder) just before the stage and releases them
 * right after, so at most one stage's weights are resident. The memory probe is read around every load and
 * release, so the peak is recorded either way.
 */
public final class ResourceManager implements AutoCloseable {
    public enum Policy { KEEP_LOADED, LOW_MEMORY }

    public final Policy policy;
    private final MemoryProbe probe;
    private final List<ManagedGraph> managed = new ArrayList<>();
    private double loadSeconds;

    public ResourceManager(Policy policy, MemoryProbe probe) {
        this.policy = policy;
        this.probe = probe;
    }

    public ManagedGraph manage(ManagedGraph g) {
        managed.add(g);
        return g;
    }

    /** Loads every managed graph (the app's "load" stage in KEEP_LOADED mode); returns the seconds it took. */
    public double loadAll() {
        double s = 0;
        for (ManagedGraph g : managed) {
            s += g.load();
            probe.sample();
        }
        return s;
    }

    /** Makes sure a stage's graphs are loaded; the time spent loading is added to {@link #takeLoadSeconds}. */
    public void acquire(List<ManagedGraph> graphs) {
        for (ManagedGraph g : graphs) {
            loadSeconds += g.load();
            probe.sample();
        }
    }

    /** After a stage: in LOW_MEMORY mode its graphs are closed. */
    public void release(List<ManagedGraph> graphs) {
        probe.sample();
        if (policy == Policy.LOW_MEMORY) {
            for (ManagedGraph g : graphs) {
                g.unload();
            }
            probe.sample();
        }
    }

    /** Seconds spent loading graphs inside stages since the last call (LOW_MEMORY mode). */
    public double takeLoadSeconds() {
        double s = loadSeconds;
        loadSeconds = 0;
        return s;
    }

    public MemoryProbe probe() {
        return probe;
    }

    /** Closes every graph (the app calls it on low-memory warnings and on exit). */
    public void unloadAll() {
        for (ManagedGraph g : managed) {
            g.unload();
        }
    }

    @Override
    public void close() {
        unloadAll();
    }
}

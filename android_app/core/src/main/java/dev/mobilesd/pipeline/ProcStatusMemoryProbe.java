package dev.mobilesd.pipeline;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;

/**
 * Peak resident memory from the Linux kernel's {@code /proc/self/status} (VmHWM, the high-water mark, and
 * VmRSS): exists on desktop Linux and on Android alike. Memory the GPU driver holds outside the process's
 * pages is not in it.
 */
public final class ProcStatusMemoryProbe implements MemoryProbe {
    private static final Path STATUS = Paths.get("/proc/self/status");
    private long sampledPeak = -1;

    static long readKib(String key) {
        try {
            for (String line : Files.readAllLines(STATUS, StandardCharsets.UTF_8)) {
                if (line.startsWith(key + ":")) {
                    String[] parts = line.substring(key.length() + 1).trim().split("\\s+");
                    return Long.parseLong(parts[0]);
                }
            }
        } catch (IOException | RuntimeException e) {
            return -1;
        }
        return -1;
    }

    public static boolean available() {
        return Files.isReadable(STATUS) && readKib("VmRSS") >= 0;
    }

    @Override
    public void sample() {
        long rss = readKib("VmRSS");
        if (rss >= 0) {
            sampledPeak = Math.max(sampledPeak, rss * 1024);
        }
    }

    @Override
    public long peakBytes() {
        long hwm = readKib("VmHWM");
        return Math.max(sampledPeak, hwm >= 0 ? hwm * 1024 : -1);
    }

    @Override
    public String description() {
        return "VmHWM of /proc/self/status: the process's peak resident memory (JVM heap, runtime, weights); "
                + "GPU driver memory outside the process is not included";
    }
}

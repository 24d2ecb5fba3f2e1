package dev.mobilesd.cli;

import com.sun.jna.Library;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Sends the native runtime's output (LiteRT and the GPU delegate log a lot to stdout and stderr) to a log
 * file, so the CLI's own output stays readable; Java's {@code System.out} / {@code System.err} keep writing
 * to the original descriptors (duplicated before the redirect). Linux only (file descriptors 1 and 2): the desktop CLI.
 */
final class NativeOutputCapture implements AutoCloseable {
    private interface CLib extends Library {
        int dup(int fd);

        int dup2(int oldFd, int newFd);

        int open(String path, int flags, int mode);

        int close(int fd);

        int fflush(Pointer stream);

        long write(int fd, byte[] buffer, long count);
    }

    /** Writes to a file descriptor with write(2), sharing the descriptor's file offset with everyone else. */
    private static final class FdOutputStream extends OutputStream {
        private final CLib c;
        private final int fd;

        FdOutputStream(CLib c, int fd) {
            this.c = c;
            this.fd = fd;
        }

        @Override
        public void write(int b) {
            write(new byte[] {(byte) b}, 0, 1);
        }

        @Override
        public void write(byte[] b, int off, int len) {
            byte[] chunk = off == 0 && len == b.length ? b : java.util.Arrays.copyOfRange(b, off, off + len);
            int done = 0;
            while (done < len) {
                byte[] rest = done == 0 ? chunk : java.util.Arrays.copyOfRange(chunk, done, len);
                long n = c.write(fd, rest, rest.length);
                if (n <= 0) {
                    return;   // the terminal went away: nothing sensible to do with CLI output
                }
                done += (int) n;
            }
        }
    }

    private static final int O_WRONLY = 1;
    private static final int O_CREAT = 0100;
    private static final int O_TRUNC = 01000;
    private final CLib c;
    private final Path log;
    private final int savedOut;
    private final int savedErr;
    private final PrintStream originalOut;
    private final PrintStream originalErr;
    private boolean closed;

    private NativeOutputCapture(Path log) throws IOException {
        this.c = Native.load("c", CLib.class);
        this.log = log;
        System.out.flush();
        System.err.flush();
        originalOut = System.out;
        originalErr = System.err;
        savedOut = c.dup(1);
        savedErr = c.dup(2);
        int fd = c.open(log.toString(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (savedOut < 0 || savedErr < 0 || fd < 0) {
            throw new IOException("cannot redirect native output to " + log);
        }
        c.dup2(fd, 1);
        c.dup2(fd, 2);
        c.close(fd);
        System.setOut(new PrintStream(new FdOutputStream(c, savedOut), true, "UTF-8"));
        System.setErr(new PrintStream(new FdOutputStream(c, savedErr), true, "UTF-8"));
    }

    /** Starts capturing into {@code log}, or returns null where that is not possible (not Linux). */
    static NativeOutputCapture start(Path log) {
        if (!System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT).contains("linux")) {
            return null;
        }
        try {
            return new NativeOutputCapture(log);
        } catch (IOException | UnsatisfiedLinkError e) {
            return null;
        }
    }

    /** Everything the native code wrote so far (C stdio buffers flushed first). */
    String text() {
        c.fflush(null);
        try {
            return new String(Files.readAllBytes(log), StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "";
        }
    }

    Path path() {
        return log;
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        c.fflush(null);
        System.out.flush();
        System.err.flush();
        c.dup2(savedOut, 1);
        c.dup2(savedErr, 2);
        c.close(savedOut);
        c.close(savedErr);
        System.setOut(originalOut);
        System.setErr(originalErr);
    }
}

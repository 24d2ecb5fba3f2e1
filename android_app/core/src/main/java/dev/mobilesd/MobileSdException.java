package dev.mobilesd;

/**
 * A problem the user can fix (bad bundle, bad flag, unsupported config): it names the problem and the fix,
 * like {@code mobilesd.errors.MobileSDError} on the Python side. Anything else is a bug and surfaces as-is.
 */
public class MobileSdException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final String problem;
    private final String fix;

    public MobileSdException(String problem, String fix) {
        super(fix == null ? problem : problem + "\n  fix: " + fix);
        this.problem = problem;
        this.fix = fix;
    }

    public MobileSdException(String problem, String fix, Throwable cause) {
        this(problem, fix);
        initCause(cause);
    }

    public String problem() {
        return problem;
    }

    public String fix() {
        return fix;
    }
}

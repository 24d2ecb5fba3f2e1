/** A bundle this client cannot or must not run: `problem` says what, `fix` what to do about it. */
export class BundleError extends Error {
  constructor(problem, fix) {
    super(fix ? `${problem}. Fix: ${fix}` : problem);
    this.name = 'BundleError';
    this.problem = problem;
    this.fix = fix;
  }
}

/** A scheduler config (or request) this client does not implement: says what and what to do instead. */
export class SchedulerConfigError extends Error {
  constructor(problem, fix) {
    super(fix ? `${problem} (${fix})` : problem);
    this.name = 'SchedulerConfigError';
    this.problem = problem;
    this.fix = fix;
  }
}

/** JSON-compatible data: what params and metadata may hold, so keys stay canonical. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One node of the task graph: what to run, with what, after what. Pure data. */
export interface TaskSpec {
  /** Task id, unique in the graph (`kernel-build`). */
  id: string;
  /** Step kind that runs it (a StepDefinition's kind). */
  kind: string;
  /** Ids of the tasks whose outputs this task reads. */
  deps: string[];
  /** Canonical parameters: everything but local file paths. Part of the key. */
  params: { [key: string]: Json };
  /** Local input files by role; their content digests (not their paths) go into the key. */
  files: { [role: string]: string | string[] };
  /**
   * Local files used at run time whose identity is already in params (a pinned sha256): their
   * paths are not keyed, so moving the file does not rebuild anything.
   */
  locations?: { [role: string]: string };
  /** One line for `plan` and the progress view. */
  title: string;
}

export interface TaskGraph {
  /** Pipeline name: the folder under out/. */
  pipeline: string;
  /** Tasks in declaration order. */
  tasks: TaskSpec[];
}

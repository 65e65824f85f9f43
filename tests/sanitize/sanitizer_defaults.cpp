// Compiled into every executable of a GANTRAIN_SANITIZE build (cmake/sanitize.cmake): the sanitizers'
// default options and leak suppressions, read by the runtime at start-up before main.
// ASAN_OPTIONS, UBSAN_OPTIONS and LSAN_OPTIONS in the environment override these flag by flag.

extern "C" {

// Libraries that load plug-ins (Open MPI's MCA components, PMIx's, hwloc's) unload them with dlclose
// at MPI_Finalize; LeakSanitizer checks at exit, when an allocation stack through an unloaded plug-in
// reads "<unknown module>" and no suppression can name it. A sanitized build keeps every plug-in
// loaded (this definition comes first in symbol lookup), so their leaks carry their library's name.
__attribute__((visibility("default"), used)) int dlclose(void*) { return 0; }

// Leaks are on (ASan's default on Linux); initialisation-order bugs between our translation units are errors.
const char* __asan_default_options() { return "check_initialization_order=1:strict_init_order=1"; }

// Undefined behaviour stops the process with a stack, whichever test started it
// (-fno-sanitize-recover=undefined already makes it fatal; halt_on_error says so for the runtime too).
const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }

// A leak check that found only suppressed leaks prints nothing: tests compare stderr.
const char* __lsan_default_options() { return "print_suppressions=0"; }

// Leak suppressions: third-party libraries only, so that a leak whose allocation stack is all ours
// (src/, tests/, bench/, tools/) still fails its test. A "leak:" entry matches a module or function
// name anywhere in the allocation stack; each was added for a leak seen in a run, with the reason.
//
// Allocations that Open MPI, its plug-ins and the libraries under it (PMIx, hwloc) make at MPI_Init for
// the life of the process and never free: leaks of every MPI process, ours or not (mpi.* tests, with
// mpirun). Module names, as the fast unwinder stops inside these libraries (built without frame pointers).
// HDF5 1.10 loses an object header from its free list when a checksum failure aborts the header's load
// (Checkpoint.FlippedScalarByteIsCaughtByTheObjectHeaderChecksum): an HDF5 error path. HDF5 frees every
// object still open at exit (H5close runs before the leak check), so a handle we forget to close does
// not reach LeakSanitizer; this entry hides no leak of ours.
// OpenBLAS keeps its thread pool's bookkeeping until exit.
// Open MPI also formats strings with asprintf that it keeps: glibc has no frame pointers, so the fast
// unwinder stops at vasprintf before reaching Open MPI's frame (a full unwind shows libopen-pal). Our
// code calls no asprintf-family function (src/, tests/, bench/, tools/), so this entry hides no leak of ours.
const char* __lsan_default_suppressions() {
  return "leak:libmpi.so\n"
         "leak:libopen-pal.so\n"
         "leak:libopen-rte.so\n"
         "leak:/openmpi/lib/openmpi3/\n"  // Open MPI's MCA plug-ins (mca_*.so)
         "leak:libpmix.so\n"
         "leak:libhwloc.so\n"
         "leak:libhdf5_serial.so\n"
         "leak:libopenblas\n"
         "leak:__vasprintf_internal\n";
}

}  // extern "C"

# release-harness: records which lines of the released tool a process runs.
# Every python3 on a fleet host imports this module (a .pth file names it);
# it costs nothing until a module of the tool is imported, so apt's helpers,
# py3compile and the harness's own one-liners run as if it were not there.
# Then a line tracer (sys.settrace, threads too) records the tool's lines,
# and at exit they are written as JSON to the directory of the installed
# version, which the harness reads after each scenario and counts against
# the statements coverage.py finds in the package.
#
# Why not coverage.py's own start-up hook in every process: importing
# coverage.py costs about 0.2 s of CPU per process (some 150 modules), which
# is more than the tool itself and, on a fleet where every sync starts a
# python3 per target, most of a sync's time. Its C tracer records the same
# line events as this one; coverage.py still decides what is a statement.
#
# Filled in by the harness: @MODULES@, @PREFIXES@, @DATA_ROOT@.
import os
import sys

MODULES = frozenset(@MODULES@)
PREFIXES = tuple(@PREFIXES@)
DATA_ROOT = "@DATA_ROOT@"


class _StartOnImport:
    """On the first import of a module of the tool, starts recording."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in MODULES:
            sys.meta_path.remove(self)
            _start()
        return None


def _installed_version():
    try:
        with open(os.path.join(DATA_ROOT, "installed")) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _start():
    import atexit
    import threading

    # The version whose code this process loads: its data is never credited
    # to another version's source.
    version = _installed_version()
    if not version:
        return
    lines = {}
    # The line tracer of each code object run so far (None: not the tool's),
    # by id: every call of every function, the tool's or not, comes through
    # `trace`, and deciding once per code object, not once per call, is most
    # of what tracing costs on top of the line events. The code object is
    # kept, so its id is never another's; keyed by id because equal code
    # objects (two empty modules) may come from different files.
    tracers = {}

    def trace(frame, event, arg):
        code = frame.f_code
        known = tracers.get(id(code))
        if known is not None:
            return known[1]
        filename = code.co_filename
        if filename.startswith(PREFIXES):
            add = lines.setdefault(filename, set()).add

            def local(frame, event, arg):
                if event == "line":
                    add(frame.f_lineno)
                return local

        else:
            local = None
        tracers[id(code)] = (code, local)
        return local

    def save():
        if not lines:
            return
        import json

        directory = os.path.join(DATA_ROOT, version)
        path = os.path.join(
            directory, "lines.%d.%s.json" % (os.getpid(), os.urandom(4).hex())
        )
        try:
            with open(path + ".tmp", "w") as fh:
                json.dump({f: sorted(n) for f, n in lines.items()}, fh)
            os.rename(path + ".tmp", path)
        except OSError:
            pass

    def forked_child():
        # A forked child (multiprocessing) ends with os._exit, which skips
        # atexit: it saves first, under its own pid.
        real_exit = os._exit

        def _exit(code):
            save()
            real_exit(code)

        os._exit = _exit

    sys.settrace(trace)
    threading.settrace(trace)
    atexit.register(save)
    os.register_at_fork(after_in_child=forked_child)


# The harness's own coverage.py runs (the import-only floor) set this.
if os.environ.get("RELEASE_HARNESS_COVERAGE") != "off":
    sys.meta_path.insert(0, _StartOnImport())

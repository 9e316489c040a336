"""Child process for tests/test_systemd_unit.py: run the daemon's Python stack under a seccomp
filter equal to the unit's SystemCallFilter= + SystemCallErrorNumber=EPERM + MemoryDenyWriteExecute=.

    python tests/sandbox_probe.py SYSCALL[,SYSCALL...] [MODEL.tflite ...]

Prints one "ok ..." line per step; any blocked call the stack needs shows up as an exception.
Exits with SKIP_EXIT when this environment does not let a process install a seccomp filter.
"""
from __future__ import annotations

import ctypes
import mmap
import sys

SKIP_EXIT = 77  # automake's "skipped" code
PR_SET_NO_NEW_PRIVS = 38  # prctl(2); seccomp without CAP_SYS_ADMIN requires it
SCMP_ACT_ALLOW = 0x7FFF0000  # seccomp.h
SCMP_ACT_ERRNO_EPERM = 0x00050000 | 1
SCMP_CMP_MASKED_EQ = 7
SHM_EXEC = 0o100000
MDWE_RULES = {  # systemd's seccomp_memory_deny_write_execute(): allowed only when these bits are clear
    "mmap": [mmap.PROT_WRITE, mmap.PROT_EXEC],  # either W or X clear
    "mprotect": [mmap.PROT_EXEC],
    "pkey_mprotect": [mmap.PROT_EXEC],
    "shmat": [SHM_EXEC],
}


class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def load_filter(allowed: set[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    seccomp = ctypes.CDLL("libseccomp.so.2")
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(Cmp)]
    ctx = ctypes.c_void_p(seccomp.seccomp_init(SCMP_ACT_ERRNO_EPERM))
    for name in sorted(allowed):
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number < 0:  # not on this architecture
            continue
        for mask in MDWE_RULES.get(name, [None]):
            cmp = None if mask is None else (Cmp * 1)(Cmp(2, SCMP_CMP_MASKED_EQ, mask, 0))
            if seccomp.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 0 if cmp is None else 1, cmp):
                raise OSError(f"seccomp rule for {name}")
    if seccomp.seccomp_load(ctx):
        raise OSError("seccomp_load")


def main(argv: list[str]) -> None:
    try:
        load_filter(set(argv[0].split(",")))
    except OSError as exc:
        print(f"skip: cannot install a seccomp filter here: {exc}")
        sys.exit(SKIP_EXIT)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    wx = libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC,
                   mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert wx in (None, ctypes.c_void_p(-1).value), "W+X mapping was allowed: filter not active"
    print("ok filter active")

    import socket
    import ssl

    import numpy as np
    import cv2
    import paho.mqtt.client  # noqa: F401
    ssl.create_default_context()
    with socket.create_server(("127.0.0.1", 0)) as server:  # what paho does, minus the broker
        with socket.create_connection(server.getsockname()[:2]), server.accept()[0]:
            pass
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    cascade.detectMultiScale(cv2.cvtColor(np.zeros((240, 320, 3), np.uint8), cv2.COLOR_BGR2GRAY))
    print("ok numpy cv2 ssl paho tcp")

    from edge_fer.interpreter import BACKENDS, available_backends
    for backend in available_backends():
        module = __import__(BACKENDS[backend], fromlist=["Interpreter"])
        for path in argv[1:]:
            interpreter = module.Interpreter(model_path=path, num_threads=2)
            interpreter.allocate_tensors()
            tensor = interpreter.get_input_details()[0]
            interpreter.set_tensor(tensor["index"], np.zeros(tensor["shape"], tensor["dtype"]))
            interpreter.invoke()
            print(f"ok {backend} {path}")


if __name__ == "__main__":
    main(sys.argv[1:])

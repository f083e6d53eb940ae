// The first program of a warm sandbox: it waits on fd 3 for its one command, then becomes it.
// Message: argc:u32le, argc NUL-terminated strings, envc:u32le, envc NUL-terminated strings.
// The task's environment arrives here, never through bwrap's own (see Bubblewrap.swift).
// Bound: 1 MiB. Exits 127 on a malformed message or a failed exec.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LIMIT (1 << 20)

static char buf[LIMIT];

static int take_strings(size_t *at, size_t len, char **out, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        if (*at >= len) return -1;
        char *s = buf + *at;
        size_t l = strnlen(s, len - *at);
        if (*at + l >= len) return -1;
        out[i] = s;
        *at += l + 1;
    }
    out[n] = NULL;
    return 0;
}

int main(void) {
    size_t len = 0;
    for (;;) {
        if (len == LIMIT) { fprintf(stderr, "starling-sandbox-init: command too large\n"); return 127; }
        ssize_t n = read(3, buf + len, LIMIT - len);
        if (n < 0) { perror("starling-sandbox-init: read"); return 127; }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(3);
    if (len == 0) return 0;  // the pool is draining: nothing to run
    size_t at = 0;
    uint32_t argc, envc;
    if (len < 4) return 127;
    memcpy(&argc, buf, 4); at = 4;
    if (argc == 0 || argc > 4096) return 127;
    char **argv = calloc(argc + 1, sizeof *argv);
    if (!argv || take_strings(&at, len, argv, argc) != 0) return 127;
    if (at + 4 > len) return 127;
    memcpy(&envc, buf + at, 4); at += 4;
    if (envc > 4096) return 127;
    char **envp = calloc(envc + 1, sizeof *envp);
    if (!envp || take_strings(&at, len, envp, envc) != 0) return 127;
    // The task's own PATH finds its program, as bwrap's execvp does for a cold sandbox (execvpe
    // would search the stub's PATH instead).
    environ = envp;
    execvp(argv[0], argv);
    fprintf(stderr, "starling: cannot run %s: ", argv[0]);
    perror(NULL);
    return 127;
}

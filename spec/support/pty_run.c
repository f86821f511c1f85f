/*
 * pty_run -- runs a command on a pseudo-terminal and types lines into it,
 * for testing the REPL the way a person uses it.
 *
 *   pty_run [-t SECONDS] -- command [args...]  < lines-to-type
 *
 * Before each line is typed, waits until the program shows a prompt (its
 * output ends with "> ") or has been silent for a second.  After the last
 * line, types Ctrl-D and waits for the program to exit.  Everything the
 * program printed goes to stdout.  Exit status: the program's, or 124 if it
 * did not finish within the timeout (default 10 s), when it is killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char output[1 << 20];
static size_t output_len;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Reads what the program printed for up to `wait` seconds; returns -1 when
 * the terminal closed, 0 when it went quiet for `quiet` seconds, 1 when its
 * output since `mark` ends with a prompt. */
static int pump(int fd, double deadline, size_t mark, double quiet) {
  double last = now();
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    double t = now();
    int r;
    if (t >= deadline) return -2;
    if (t - last >= quiet) return 0;
    r = poll(&p, 1, 20);
    if (r < 0 && errno != EINTR) return -1;
    if (r > 0) {
      ssize_t n = read(fd, output + output_len, sizeof(output) - output_len - 1);
      if (n <= 0) return -1;
      output_len += (size_t)n;
      last = now();
      if (output_len - mark >= 2 && memcmp(output + output_len - 2, "> ", 2) == 0)
        return 1;
    }
  }
}

int main(int argc, char **argv) {
  double timeout = 10, deadline;
  char line[4096];
  int fd, status = 0, i = 1, r;
  pid_t pid;
  if (argc > 2 && strcmp(argv[1], "-t") == 0) {
    timeout = atof(argv[2]);
    i = 3;
  }
  if (i < argc && strcmp(argv[i], "--") == 0) i++;
  if (i >= argc) {
    fprintf(stderr, "usage: pty_run [-t SECONDS] -- command [args...]\n");
    return 2;
  }
  deadline = now() + timeout;
  pid = forkpty(&fd, NULL, NULL, NULL);
  if (pid < 0) {
    perror("forkpty");
    return 2;
  }
  if (pid == 0) {
    execvp(argv[i], argv + i);
    perror(argv[i]);
    _exit(127);
  }
  r = pump(fd, deadline, 0, 5.0);  /* a slow start is not a prompt */
  while (r >= 0 && fgets(line, sizeof(line), stdin)) {
    size_t mark = output_len, len = strlen(line);
    /* A person does not type the instant a prompt appears; the line
     * editor may not have switched the terminal mode yet. */
    usleep(100 * 1000);
    if (len && line[len - 1] == '\n') line[len - 1] = '\r';
    if (write(fd, line, len) < 0) break;
    r = pump(fd, deadline, mark + len, 1.0);
  }
  /* End the input with Ctrl-D, typed again if the line editor dropped it
   * (it may flush input typed while it switches the terminal mode). */
  while (r >= 0) {
    usleep(100 * 1000);
    if (write(fd, "\004", 1) < 0) break;
    r = pump(fd, deadline, output_len, 1.0);
    if (waitpid(pid, &status, WNOHANG) == pid) goto reaped;
  }
  if (now() >= deadline) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    fwrite(output, 1, output_len, stdout);
    fprintf(stderr, "pty_run: timed out after %g s\n", timeout);
    return 124;
  }
  waitpid(pid, &status, 0);
reaped:
  while (pump(fd, now() + 0.2, output_len, 0.1) > 0) {}
  fwrite(output, 1, output_len, stdout);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

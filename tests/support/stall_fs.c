/*
 * stall_fs: a tiny FUSE file system for tests of a stalled device (fapolicyd #237).
 *
 *   stall_fs MOUNTPOINT
 *
 * Serves a few read-only files from memory in its root directory: clean1.txt .. clean3.txt,
 * foul.txt (holds the scanner's word "foul") and stall1 .. stall9. A read of any file whose name
 * starts with "stall" blocks until the program gets SIGUSR1 (then every stalled read, and every
 * later one, returns the file's bytes), the reading thread is killed (the kernel's interrupt ends
 * that read with EINTR, so that a killed reader can exit) or the program is killed. Stays in the foreground,
 * multithreaded, so that other files are served while reads stall. Prints "stall_fs: stalling read of /NAME"
 * on stdout when a read starts to stall.
 *
 * The test that runs it mounts it (as root) on a directory it created, kills it by pid and detaches
 * the mount (umount2 MNT_DETACH) when done.
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <fuse.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  const char* name;
  const char* contents;
} StallFile;

static const StallFile kFiles[] = {
    {"clean1.txt", "nothing wrong in here (1)\n"}, {"clean2.txt", "nothing wrong in here (2)\n"},
    {"clean3.txt", "nothing wrong in here (3)\n"}, {"foul.txt", "this one is foul\n"},
    {"stall1", "stalled, then clean\n"},           {"stall2", "stalled, then clean\n"},
    {"stall3", "stalled, then clean\n"},           {"stall4", "stalled, then clean\n"},
    {"stall5", "stalled, then clean\n"},           {"stall6", "stalled, then clean\n"},
    {"stall7", "stalled, then clean\n"},           {"stall8", "stalled, then clean\n"},
    {"stall9", "stalled, then clean\n"},
};
#define FILE_COUNT (sizeof kFiles / sizeof kFiles[0])

static atomic_int released = 0; /* lock-free: set from a signal handler */

static void on_release(int signal_number) {
  (void)signal_number;
  atomic_store(&released, 1);
}

static const StallFile* find_file(const char* path) {
  if (path[0] != '/') return NULL;
  for (size_t i = 0; i < FILE_COUNT; ++i) {
    if (strcmp(path + 1, kFiles[i].name) == 0) return &kFiles[i];
  }
  return NULL;
}

static int stall_getattr(const char* path, struct stat* st, struct fuse_file_info* fi) {
  (void)fi;
  memset(st, 0, sizeof *st);
  if (strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  const StallFile* file = find_file(path);
  if (file == NULL) return -ENOENT;
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_size = (off_t)strlen(file->contents);
  return 0;
}

static int stall_readdir(const char* path, void* buffer, fuse_fill_dir_t fill, off_t offset,
                         struct fuse_file_info* fi, enum fuse_readdir_flags flags) {
  (void)offset;
  (void)fi;
  (void)flags;
  if (strcmp(path, "/") != 0) return -ENOENT;
  fill(buffer, ".", NULL, 0, 0);
  fill(buffer, "..", NULL, 0, 0);
  for (size_t i = 0; i < FILE_COUNT; ++i) fill(buffer, kFiles[i].name, NULL, 0, 0);
  return 0;
}

static int stall_open(const char* path, struct fuse_file_info* fi) {
  if (find_file(path) == NULL) return -ENOENT;
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EACCES;
  fi->direct_io = 1; /* every read reaches us: no page cache hides a stall */
  return 0;
}

static int stall_read(const char* path, char* buffer, size_t size, off_t offset, struct fuse_file_info* fi) {
  (void)fi;
  const StallFile* file = find_file(path);
  if (file == NULL) return -ENOENT;
  if (strncmp(path + 1, "stall", 5) == 0 && !atomic_load(&released)) {
    printf("stall_fs: stalling read of %s\n", path);
    fflush(stdout);
    const struct timespec tick = {0, 10 * 1000 * 1000};
    while (!atomic_load(&released)) {
      if (fuse_interrupted()) return -EINTR;
      nanosleep(&tick, NULL);
    }
  }
  const size_t length = strlen(file->contents);
  if ((size_t)offset >= length) return 0;
  if (size > length - (size_t)offset) size = length - (size_t)offset;
  memcpy(buffer, file->contents + offset, size);
  return (int)size;
}

/* Interrupts reach a stalled read's thread as SIGUSR2 (SIGUSR1 is the release). */
static void* stall_init(struct fuse_conn_info* connection, struct fuse_config* config) {
  (void)connection;
  config->intr = 1;
  config->intr_signal = SIGUSR2;
  return NULL;
}

static const struct fuse_operations kOperations = {
    .init = stall_init,
    .getattr = stall_getattr,
    .readdir = stall_readdir,
    .open = stall_open,
    .read = stall_read,
};

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: stall_fs MOUNTPOINT\n");
    return 2;
  }
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = on_release;
  sigemptyset(&action.sa_mask);
  sigaction(SIGUSR1, &action, NULL);
  setvbuf(stdout, NULL, _IOLBF, 0);
  /* Foreground, multithreaded, room for many stalled reads at once. */
  char* args[] = {argv[0], argv[1], "-f", "-o", "max_threads=64,fsname=stall_fs,subtype=stall_fs", NULL};
  return fuse_main(5, args, &kOperations, NULL);
}

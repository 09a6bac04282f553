/*
 * neg_proto.h: the interfaces shared by negotiator-host and negotiator-guest.
 *
 * Two halves.  proto_*: frames, strict JSON, requests and responses, base64,
 * the method table; pure functions over memory, no I/O policy (neg_proto.c).
 * neg_*: what both programs do with the outside world: logging, options,
 * the command runner, the commands directory, built-ins and the client side
 * of a call (neg.c).
 */
#ifndef NEG_PROTO_H
#define NEG_PROTO_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define NEG_VERSION "0.9.0"

/* Bounds, all in one place.  Nothing the peer sends is allocated past these. */
#define PROTO_MAX_FRAME_DEFAULT (64u << 20) /* payload bytes of one frame */
#define PROTO_MAX_FRAME_LIMIT (1u << 30)    /* what --max-frame may raise it to */
#define PROTO_MAX_LENLINE 32                /* bytes of a length line, newline excluded */
#define PROTO_MAX_DEPTH 32                  /* nesting of arrays and objects (at most 32) */
/*
 * JSON values of one message (keys, strings, numbers, literals, arrays and
 * objects; jsmn makes a token of each): 2^17.  The largest messages need a
 * little more than their list: an execute of PROTO_MAX_ARGS arguments, a
 * list_commands reply of 65536 names.  A token costs 24 bytes (jsmn's and
 * where its subtree ends), so a parse never needs more than 3 MiB of them,
 * however large the frame.
 */
#define PROTO_MAX_TOKENS 131072
#define PROTO_MAX_ARGS 4096                 /* argv entries of execute */
#define PROTO_MAX_ID 64                     /* bytes of the JSON text of a request id */
/*
 * A failure reply's "exit_code" (an exit status, 0-255) and "signal" (Linux's
 * signals, 1-64): a value outside, or not an integer, is read as absent, so
 * that an exit status of 256 or 128 + 128 never wraps to 0 (success).
 */
#define PROTO_MAX_EXIT_CODE 255
#define PROTO_MAX_SIGNAL 64
/* \udc80-\udcff without a high surrogate: a raw byte 0x80-0xff, as Python's surrogateescape */
#define PROTO_RAW_BYTE_ESCAPE(cp) ((cp) >= 0xdc80 && (cp) <= 0xdcff)
#define PROTO_PARTIAL_MS 5000               /* a frame left incomplete this long is dropped */
#define PROTO_MAX_RAW_HEAD 256              /* bytes of the JSON header of a data frame "H+R\n" */
#define NEG_MAX_STDERR (64u << 10)          /* captured stderr kept for the reply */
#define NEG_MAX_NAME 255                    /* bytes of a command name */
#define NEG_WRITE_CHUNK (32u << 10)         /* virtio_console takes at most this per write() */
#define NEG_KILL_GRACE_MS 2000              /* SIGTERM to SIGKILL */
#define NEG_STOPPING_TEXT "The daemon is stopping"  /* the reply to calls it ends */
#define NEG_STOP_GRACE_MS 5000              /* SIGTERM: running commands may finish this long */
#define NEG_STOP_FLUSH_MS 2000              /* ... then, after the kill, their replies may go out */

/*
 * Streaming execute (the README's protocol section).  A data frame is one
 * write() on a port: its length line, header and bytes fit NEG_WRITE_CHUNK.
 * Each receiver grants a window of NEG_STREAM_WINDOW bytes per call and
 * grants consumed bytes back once NEG_STREAM_GRANT of them (or all it holds)
 * are gone; peers whose frame limit is below NEG_STREAM_MIN_FRAME do not
 * stream.
 */
#define NEG_STREAM_VERSION 1
#define NEG_STREAM_CHUNK (NEG_WRITE_CHUNK - PROTO_MAX_RAW_HEAD) /* data bytes of one frame */
#define NEG_STREAM_WINDOW (256u << 10)
#define NEG_STREAM_GRANT (64u << 10)
#define NEG_STREAM_MIN_FRAME (NEG_WRITE_CHUNK + 1024)
#define NEG_STREAM_OUT_HIGH (128u << 10) /* a channel's unsent bytes before it stops reading pipes */

/* The runner, the served channel and the callers (neg.c). */
#define NEG_CHAN_MAXJOBS 4            /* commands running on one channel (the guest daemon: 1) */
#define NEG_CHAN_QUEUE 4              /* commands waiting on one channel; more are refused "busy" */
#define NEG_CHAN_SLOTS (NEG_CHAN_MAXJOBS + NEG_CHAN_QUEUE)
#define NEG_CHAN_AFTER_MAX (64u << 10) /* answers held for order behind a command before reading stops */
#define NEG_READ_CHUNK 65536          /* bytes one read() takes */
#define NEG_READS_PER_WAKE 16         /* reads of one fd per wake-up: others get a turn */
#define NEG_KEEP_BUF (256u << 10)     /* a channel's buffer larger than this is freed once empty */
#define NEG_CHAN_OUT_MAX (256u << 10) /* unsent output at which a channel stops reading requests */
#define NEG_SRV_OUT_MAX (4u << 20)    /* a daemon's unsent output, all channels, past which ... */
#define NEG_CHAN_OUT_LOW (16u << 10)  /* ... a channel stops reading requests at this much of its own */
#define NEG_MAX_COMMANDS 65536        /* names list_commands returns (see PROTO_MAX_TOKENS) */
#define NEG_FD_SCAN_MAX 65536         /* fds closed in a child where /proc is missing */
#define NEG_POLL_MAX_MS 3600000       /* the longest single poll() wait; also "no deadline" */
#define NEG_REPLY_MARGIN_MS 2000      /* a caller outwaits the callee's kill by grace + this */
#define NEG_DROP_READS 256            /* reads a caller spends on what an earlier one left */
#define NEG_NULL_QUIET_MS 5000        /* an "id": null failure is our answer after this quiet */
#define NEG_MIN_TIMEOUT 0.001         /* a -t below a millisecond is sent as one millisecond */
#define NEG_FRAME_MIN_RATE 1000       /* bytes/ms: a frame may take PROTO_PARTIAL_MS + size/this */
#define NEG_DATA_FRAME_MS 2000        /* a data frame (one write) arrives whole within this */
#define NEG_LOG_BURST 10              /* lines a channel may log about its peer per window ... */
#define NEG_LOG_WINDOW_MS 10000       /* ... then the rest are counted, not shown */
#define NEG_POLL_WARN_MS 10000        /* a failing poll() is logged at most this often ... */
#define NEG_POLL_BACKOFF_MS 100       /* ... and waited out this long */

/* The host daemon and CLI (neg_host.c). */
#define HOST_CHANNEL_DIR "/var/lib/libvirt/qemu/channel/target"
#define HOST_MAX_GUESTS 4096          /* guests one daemon serves */
#define HOST_MAX_NAME 256             /* bytes of a guest's name */
#define HOST_RESCAN_MS 60000          /* the safety net behind inotify */
#define HOST_RESCAN_NO_INOTIFY_MS 2000 /* where inotify is missing */
#define HOST_RESCAN_DEBOUNCE_MS 50    /* a burst of directory events is one rescan */
#define HOST_RETRY_MIN_MS 100         /* a socket that refused is tried again after this ... */
#define HOST_RETRY_MAX_MS 60000       /* ... doubling up to this (inotify says when it is back) */
#define HOST_PER_GUEST_JOBS NEG_CHAN_MAXJOBS
#define HOST_TOTAL_JOBS 64            /* commands running at once for all guests, shared fairly */
#define HOST_VIRSH_TIMEOUT_MS 5000    /* one virsh call; then it is killed and paths give names */
#define HOST_VIRSH_REAP_MS 1000       /* the CLI waits this long for a killed virsh to be reaped */
#define HOST_VIRSH_MAX_OUT (4u << 20) /* bytes of one virsh call's output */
#define HOST_RETRY_FD_MAX_MS 5000     /* a guest refused for want of fds is tried this often */
#define HOST_FD_RESERVE 16            /* fds guests leave free: a command's start takes 8 */
#define HOST_FLEET_PARALLEL 32        /* a fleet's calls at once, by default (--parallel) */
#define HOST_FLEET_LINE (16u << 10)   /* a prefixed line longer than this is split */
#define HOST_FLEET_KEEP (1u << 20)    /* --json: bytes of each guest's stdout, stderr kept */
#define HOST_FLEET_SUMMARY 800        /* bytes of failed guests the summary line names */
#define HOST_FLEET_RETRY_MS 50        /* a socket whose backlog is full is tried again after */

/* The guest daemon and CLI (neg_guest.c). */
#define GUEST_PORTS_DIR "/sys/class/virtio-ports"
#define GUEST_FIND_PORT_MS 5000       /* the name file appears a moment after the node */
#define GUEST_PROBE_MIN_MS 50         /* host away: the port is probed after this ... */
#define GUEST_PROBE_MAX_MS 500        /* ... doubling up to this where SIGIO may never come ... */
#define GUEST_PROBE_SAFETY_MS 60000   /* ... or this where SIGIO is known to come on host connect */
#define GUEST_REOPEN_MS 1000          /* an unplugged port is looked for this often */
#define GUEST_UNCONFIRMED_MS 2000     /* how long data may run ahead of the host's "port open" */

/* Wire names: the two channels, as the 0.8 reference names them. */
#define H2G_NAME "negotiator-host-to-guest.0"
#define G2H_NAME "negotiator-guest-to-host.0"

/* A growable byte buffer; the data is always NUL-terminated for convenience. */
struct buf {
	char *p;
	size_t len;
	size_t cap;
};

void buf_reserve(struct buf *, size_t);
void buf_add(struct buf *, const void *, size_t);
void buf_adds(struct buf *, const char *);
void buf_addf(struct buf *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
void buf_free(struct buf *);

/*
 * A strict JSON checker, fed a byte at a time and resumable at any byte: the
 * frame reader runs it over a body as it arrives (proto_served_parse takes
 * its verdict), proto_json_parse over a whole payload.  Its fields are the
 * reader's business (neg_proto.c).
 */
struct proto_check {
	int state;
	int depth;          /* open arrays and objects */
	uint32_t objects;   /* bit d: the container at depth d is an object */
	int ntok;           /* values so far, as jsmn counts tokens */
	int key;            /* the string being read is a key */
	int need;           /* UTF-8 continuation bytes to come, or \u hex digits read */
	unsigned lo, hi;    /* the range of the next UTF-8 continuation byte */
	unsigned long cp;   /* the \u escape being read */
	int high;           /* a high surrogate waits for its low half */
	const char *lit;    /* the rest of true, false or null */
	size_t pos;         /* bytes taken */
	const char *why;    /* why the text cannot be JSON, NULL while it can */
};

/* Frame reader: "LEN\n" + LEN bytes, fed incrementally; resynchronises after a cut frame. */
enum proto_event { PROTO_NEED_MORE, PROTO_FRAME, PROTO_ERROR };

struct proto_reader {
	int state;
	char line[PROTO_MAX_LENLINE];
	size_t linelen;
	size_t want;     /* payload bytes still expected (or to skip) */
	size_t declared; /* the payload length of the frame in progress */
	size_t max_frame;
	struct buf body; /* the payload when PROTO_FRAME is returned */
	struct buf held; /* a frame's bytes kept across an error returned before it */
	struct proto_check ck;
	int track;       /* where the last bytes stand against "DIGITS\n{" */
	char digits[PROTO_MAX_LENLINE]; /* the last digits of the latest run */
	size_t ndigits;
	char tail[PROTO_MAX_LENLINE];   /* the last bytes of a frame being skipped */
	size_t ntail;
	int raw_ok;      /* data frames "H+R\n" are read (between peers that stream) */
	size_t rawlen;   /* the raw bytes that follow the header being read */
	size_t json_len; /* of the frame returned: the JSON's bytes; raw bytes follow in body */
	char err[160];   /* the reason when PROTO_ERROR is returned */
	int cut;         /* ... which is a frame cut short by a later one: its sender is gone */
};

void proto_reader_init(struct proto_reader *, size_t max_frame);
void proto_reader_reset(struct proto_reader *);
void proto_reader_free(struct proto_reader *);
int proto_reader_partial(const struct proto_reader *);
size_t proto_reader_declared(const struct proto_reader *);
int proto_reader_raw(const struct proto_reader *);
void proto_reader_rehunt(struct proto_reader *, struct buf *bytes);
enum proto_event proto_reader_feed(struct proto_reader *, const char *, size_t,
    size_t *used);
void proto_frame_end(struct buf *, size_t start);

/* JSON: validated text plus jsmn's tokens. */
struct proto_json {
	const char *js;
	size_t len;
	void *tok; /* jsmntok_t[ntok]; jsmn.h is included by neg_proto.c alone */
	int *next; /* next[t]: the token after t's subtree */
	int ntok;
};

int proto_json_parse(struct proto_json *, const char *, size_t, char *err,
    size_t errlen);
unsigned long proto_check_runs(void);
void proto_json_free(struct proto_json *);
int proto_json_get(const struct proto_json *, int obj, const char *key);
int proto_json_next(const struct proto_json *, int tok);
int proto_json_type(const struct proto_json *, int tok);
int proto_json_size(const struct proto_json *, int tok);
int proto_json_is(const struct proto_json *, int tok, const char *literal);
int proto_json_is_string(const struct proto_json *, int tok, const char *);
int proto_json_string(const struct proto_json *, int tok, struct buf *);
int proto_json_number(const struct proto_json *, int tok, double *);
int proto_parse_number(const char *, size_t, double *);
void proto_put_seconds(struct buf *, double);
enum { PROTO_J_OBJECT = 1, PROTO_J_ARRAY, PROTO_J_STRING, PROTO_J_PRIMITIVE };

void proto_put_string(struct buf *, const char *, size_t);

/* base64, RFC 4648 with padding. */
void proto_b64_encode(struct buf *, const void *, size_t);
int proto_b64_decode(struct buf *, const char *, size_t);
int proto_utf8_valid(const char *, size_t);

/* The methods a daemon serves: a fixed table, never reflection. */
enum proto_method {
	PROTO_M_UNKNOWN,
	PROTO_M_EXECUTE,
	PROTO_M_LIST_COMMANDS,
	PROTO_M_PING,
	PROTO_M_VERSION
};

enum proto_method proto_method_lookup(const char *);

struct proto_request {
	char *method;
	char **argv; /* NULL-terminated */
	size_t argc;
	struct buf input;
	int has_input;
	int base64;
	double timeout; /* seconds, 0 = none */
	int stream;     /* kw.stream: the call streams (NEG_STREAM_VERSION) */
	size_t window;  /* kw.window: output bytes the caller takes before it grants more */
	int want_stdin; /* kw.stdin: stdin comes as data frames (else /dev/null) */
	int new_caller; /* kw.new_caller (version): calls from before on the channel are void */
	char id[PROTO_MAX_ID + 1]; /* the id's JSON text, "" if none */
};

int proto_request_parse(struct proto_request *, const char *, size_t,
    char *err, size_t errlen);
void proto_request_free(struct proto_request *);
void proto_request_write(struct buf *, const char *method, char *const *argv,
    size_t argc, const struct proto_request *kw);

struct proto_response {
	int success;
	int result_kind; /* PROTO_J_STRING, PROTO_J_ARRAY or 0 */
	struct buf result; /* a string result, decoded (and base64-decoded) */
	char **list;       /* an array result of strings, NULL-terminated */
	size_t nlist;
	char *error;
	int exit_code;   /* -1 if not given */
	int signal;      /* 0 if not given */
	int timed_out;
	int base64;      /* the peer encoded result and stderr: not a 0.8 peer */
	int stream;      /* a version reply's "stream": the streaming version it serves */
	struct buf stderr_text;
	char id[PROTO_MAX_ID + 1];
};

int proto_response_parse(struct proto_response *, const char *, size_t,
    char *err, size_t errlen);
void proto_response_free(struct proto_response *);

/* Reply writers; id is the request's id text ("" for none). */
struct proto_failure {
	const char *error;
	int exit_code; /* -1: none */
	int signal;    /* 0: none */
	int timed_out;
	const char *stdout_text; /* what the command printed before it failed */
	size_t stdout_len;
	const char *stderr_text;
	size_t stderr_len;
	int base64;
};

void proto_reply_string(struct buf *, const char *id, const char *, size_t,
    int base64, const char *err, size_t errlen);
void proto_reply_list(struct buf *, const char *id, char *const *, size_t);
void proto_reply_error(struct buf *, const char *id, const struct proto_failure *);
void proto_reply_version(struct buf *, const char *id, const char *version, int stream);

/* The frames of a streamed call besides its request and final reply. */
enum { PROTO_S_DATA = 1, PROTO_S_CREDIT, PROTO_S_EOF, PROTO_S_CANCEL };

struct proto_stream {
	int kind;
	int fd;          /* DATA, EOF: 0 stdin, 1 stdout, 2 stderr */
	size_t credit;   /* CREDIT: bytes granted */
	int kill;        /* CANCEL: "KILL" (at once) rather than "TERM" */
	const char *data;/* DATA: the raw bytes after the header */
	size_t len;
	char id[PROTO_MAX_ID + 1];
};

int proto_stream_parse(struct proto_stream *, const char *payload, size_t len, size_t json_len,
    char *err, size_t errlen);
int proto_served_parse(const struct proto_reader *, struct proto_stream *, struct proto_request *,
    char *err, size_t errlen);
void proto_stream_data(struct buf *, const char *id, int fd, const char *, size_t);
size_t proto_stream_data_open(struct buf *, const char *id, int fd, size_t room);
void proto_stream_data_close(struct buf *, size_t start, size_t n);
void proto_stream_credit(struct buf *, const char *id, size_t n);
void proto_stream_eof(struct buf *, const char *id, int fd);
void proto_stream_cancel(struct buf *, const char *id, int kill);

/* ---- neg.c ---- */

extern const char *neg_progname;
extern int neg_verbosity;   /* LOG_ERR .. LOG_DEBUG */
extern int neg_syslog;

void neg_log(int prio, const char *, ...) __attribute__((format(printf, 2, 3)));
void neg_die(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
void *neg_alloc(size_t);
char *neg_strdup(const char *);
int64_t neg_now(void);
int neg_parse_seconds(const char *, double *);
int neg_parse_size(const char *, size_t *);
int neg_split(const char *, char ***argv, size_t *argc, char *err, size_t errlen);
void neg_strv_free(char **);
int neg_signals_init(void);
int neg_sigpipe_fd(void);
#define NEG_SIG_MAX 32           /* signals a loop tells apart: the classic ones, below 32 */
#define NEG_SIG(sig) (1u << (sig)) /* a signal's bit in what neg_signal_drain returns */
unsigned neg_signal_drain(void);
void neg_set_nonblock(int);
#define NEG_ESCAPE_MAX 8    /* bytes of one character's printable form: \xc2\x9b */
void neg_escape(struct buf *, const char *, size_t, int tab_ok);

/* Commands: a directory of executables plus the built-ins. */
struct neg_cmdenv {
	const char *dir;      /* the commands directory */
	const char *guest;    /* NEGOTIATOR_GUEST on the host, NULL in the guest */
};

int neg_valid_name(const char *);
int neg_list_commands(const struct neg_cmdenv *, char ***names, size_t *n);
int neg_builtin_run(const char *name);

/* How neg_job_spawn starts a process: the one path for commands and helpers such as virsh. */
struct neg_spawn {
	const char *path;    /* what is exec'd; with inherit, a name looked up in PATH */
	int builtin;         /* instead: the built-in argv[0], run in the forked child */
	int inherit;         /* the caller's environment and PATH (helpers), not the clean ones */
	const char *guest;   /* NEGOTIATOR_GUEST in the clean environment, or NULL */
	const char *input;   /* stdin; NULL: /dev/null */
	size_t inputlen;
	int keep_stdin;      /* stdin a pipe the caller feeds (input is then ignored) */
	size_t max_out;
	int64_t deadline;    /* ms, 0: none */
	int grace_ms;        /* SIGTERM to SIGKILL; 0: SIGKILL at once */
};

/* One running process, driven by the caller's poll loop. */
struct neg_job {
	pid_t pid;
	int status;    /* wait status, valid when reaped */
	int reaped;
	int fd_in, fd_out, fd_err;
	const char *in;
	size_t inlen, inpos;
	struct buf out, err;
	size_t max_out;
	int overflow;
	int64_t deadline;  /* ms, 0: none */
	int64_t kill_at;   /* ms, when SIGKILL follows SIGTERM (or the pipes are let go); 0: none */
	int grace_ms;
	int signalled;     /* its process group got SIGTERM (or SIGKILL) */
	int group_killed;  /* ...and, its leader reaped, SIGKILL */
	int timed_out;
	int discard;       /* the caller went away: no reply */
	int stopping;      /* the daemon is stopping: the reply says so, with the status */
	char name[NEG_MAX_NAME + 1];
};

extern void (*neg_child_restore_limits)(void);
int neg_job_spawn(struct neg_job *, const struct neg_spawn *, char *const *argv,
    char *err, size_t errlen);
int neg_job_start(struct neg_job *, const struct neg_cmdenv *, char *const *argv,
    const char *input, size_t inputlen, int keep_stdin, double timeout, size_t max_out,
    char *err, size_t errlen);
int neg_job_pollfds(struct neg_job *, struct pollfd *);
void neg_job_io(struct neg_job *, const struct pollfd *, int n);
void neg_job_reap(struct neg_job *);
void neg_job_tick(struct neg_job *, int64_t now);
int64_t neg_job_wake(const struct neg_job *);
int neg_job_done(const struct neg_job *);
void neg_job_kill(struct neg_job *, int64_t now);
void neg_job_reply(struct neg_job *, const struct proto_request *, struct buf *frame,
    size_t max_frame);
void neg_job_free(struct neg_job *);

/*
 * Serving requests: dispatch by the method table.  Commands share a global cap
 * fairly: while `busy` channels have commands running or waiting, each may run
 * at most max_running / busy of them (at least one), so one guest at its share
 * waits while the others still start theirs.  Other methods never wait.
 */
struct neg_server {
	struct neg_cmdenv env;
	size_t max_frame;
	int running;
	int max_running;
	int busy;          /* channels with commands running or waiting */
	size_t unsent;     /* output all channels have queued and not yet sent */
};

void neg_reply_text(struct buf *, const char *id, const char *msg);

/*
 * One served channel: a byte stream carrying requests from the peer and our
 * replies, with up to maxjobs commands running and NEG_CHAN_QUEUE waiting;
 * replies without an id are sent in the order of the requests.  Both daemons
 * drive these from their poll loop.
 */
#define NEG_JOB_FDS 3	/* a command's stdin, stdout and stderr: what neg_job_pollfds fills at most */
#define NEG_CHAN_FDS (1 + NEG_JOB_FDS * NEG_CHAN_MAXJOBS)
enum { NEG_CHAN_PFD_PEER, NEG_CHAN_PFD_JOBS };	/* neg_chan_pollfds' slots: the channel's fd, then its jobs' */

/*
 * An execute in progress: a command waiting for a job slot, then running, then
 * its reply done.  Its state changes only in neg.c's slot_event, by the table
 * neg_slot_next returns (-1: the event is not allowed in that state).
 */
enum { SLOT_FREE, SLOT_QUEUED, SLOT_RUNNING, SLOT_DONE, SLOT_STATES };
enum {
	SEV_EXECUTE,    /* the request takes a free slot */
	SEV_START,      /* the fair share lets its command start */
	SEV_REFUSED,    /* it will not run (streaming not served; the start failed) */
	SEV_JOB_DONE,   /* the command was reaped and its pipes are closed */
	SEV_FLUSHED,    /* its reply may go now (request order allows) */
	SEV_CANCEL,     /* the caller's cancel, TERM */
	SEV_KILL,       /* the caller's cancel, KILL */
	SEV_VIOLATION,  /* the caller broke the streaming rules */
	SEV_NEW_CALLER, /* a new caller took the channel: the call's caller is gone */
	SEV_PEER_GONE,  /* the channel's peer disconnected */
	SEV_STOP,       /* the daemon is stopping (SIGTERM) */
	SEV_COUNT
};
int neg_slot_next(int state, int ev);
void neg_slot_table(struct buf *);

struct neg_slot {
	struct neg_job job;
	struct proto_request req;
	struct buf reply;
	int nfds;      /* pollfds of the job in the current pass */
	int state;
	unsigned seq;  /* arrival order: replies without an id go out in it */
	int has_id;    /* the request had an id: its reply may pass earlier ones */
	int64_t since; /* when the request arrived (a queued command's timeout runs from then) */
	/* a streamed call (req.stream) */
	struct buf sin;      /* stdin received, not yet taken by the command ... */
	size_t sinoff;       /* ... from here */
	size_t sin_room;     /* stdin bytes the caller may still send */
	size_t sin_taken;    /* taken by the command since the last grant */
	int sin_eof;         /* the caller sent its end of input */
	int sin_closed;      /* the command's stdin is closed: more is dropped */
	size_t out_credit;   /* output bytes the caller takes now */
	const char *why;     /* the caller broke the protocol: the reply says so */
	struct buf after;    /* answers to later requests without an id, sent right after reply */
};

struct neg_chan {
	int fd;
	struct neg_server *srv;
	struct proto_reader rd;
	struct buf in;
	size_t inoff;
	struct buf out;
	size_t outoff;
	int64_t last_rx;
	int64_t frame_t0;    /* when the first byte of the frame being read arrived */
	struct neg_slot slot[NEG_CHAN_SLOTS];
	int count, maxjobs;  /* slots in use; commands that may run at once */
	int stopping;        /* the daemon is stopping: executes are refused */
	unsigned seq;
	int running;         /* this channel's commands running */
	int busy;            /* counted in srv->busy */
	size_t unsent_counted; /* this channel's part of srv->unsent */
	const char *guest;   /* NEGOTIATOR_GUEST for this channel's commands */
	int64_t log_until;   /* the end of the current log window ... */
	int log_count;       /* ... lines logged in it ... */
	int log_dropped;     /* ... and suppressed */
};

void neg_chan_init(struct neg_chan *, int fd, struct neg_server *, int maxjobs);
void neg_slot_event(struct neg_chan *, int slot, int ev);
int neg_chan_pollfds(struct neg_chan *, struct pollfd *, int want_input);
int neg_chan_io(struct neg_chan *, const struct pollfd *, int n);
void neg_chan_reap(struct neg_chan *);
void neg_chan_tick(struct neg_chan *, int64_t now);
int64_t neg_chan_wake(const struct neg_chan *);
void neg_chan_reset(struct neg_chan *);
void neg_chan_free(struct neg_chan *);
int neg_chan_busy(const struct neg_chan *);

/*
 * A daemon's stop on SIGTERM, the same in both: REFUSE at once (no new
 * commands, the waiting ones answered, the channels still read for the
 * running calls' frames); KILL after NEG_STOP_GRACE_MS (SIGTERM to what
 * runs, SIGKILL NEG_KILL_GRACE_MS later, each call answered "The daemon is
 * stopping" with the command's status); DROP when the replies could not go
 * out within NEG_STOP_FLUSH_MS more.  The daemon exits once no channel is
 * busy.
 */
enum { NEG_STOP_NONE, NEG_STOP_REFUSE, NEG_STOP_KILL, NEG_STOP_DROP };
struct neg_stop {
	int step;
	int64_t at;   /* when the next step is due */
};
void neg_stop_begin(struct neg_stop *, int64_t now);
int neg_stop_due(struct neg_stop *, int64_t now);
void neg_chan_stop(struct neg_chan *, int step);
int64_t neg_min_deadline(int64_t, int64_t);
int neg_poll_timeout(int64_t deadline, int64_t now);
int neg_poll(struct pollfd *, nfds_t, int timeout, int64_t *warned_at);

/* Options both programs take (the long ones' codes; programs number theirs from NEG_OPT_OWN). */
enum { NEG_OPT_COMMANDS = 256, NEG_OPT_INPUT, NEG_OPT_MAX_FRAME, NEG_OPT_SYSLOG, NEG_OPT_VERSION,
    NEG_OPT_OWN };

#define NEG_COMMON_LONGOPTS \
	{ "execute", required_argument, NULL, 'e' }, \
	{ "daemon", no_argument, NULL, 'd' }, \
	{ "timeout", required_argument, NULL, 't' }, \
	{ "commands-directory", required_argument, NULL, NEG_OPT_COMMANDS }, \
	{ "input", required_argument, NULL, NEG_OPT_INPUT }, \
	{ "max-frame", required_argument, NULL, NEG_OPT_MAX_FRAME }, \
	{ "syslog", no_argument, NULL, NEG_OPT_SYSLOG }, \
	{ "verbose", no_argument, NULL, 'v' }, \
	{ "quiet", no_argument, NULL, 'q' }, \
	{ "version", no_argument, NULL, NEG_OPT_VERSION }, \
	{ "help", no_argument, NULL, 'h' }

/* The usage lines of the options above but -e and -d (the commands directory's wording aside). */
#define NEG_COMMON_USAGE \
"      --input=FILE|-           with -e: the command's standard input\n" \
"      --max-frame=BYTES        largest message accepted (default 64M)\n" \
"      --syslog                 log to syslog instead of standard error\n" \
"  -v, --verbose                more logging (repeatable)\n" \
"  -q, --quiet                  less logging (repeatable)\n" \
"      --version                print the version and exit\n" \
"  -h, --help                   show this message and exit\n" \
"\n"

struct neg_cli {
	const char *usage;
	struct neg_server srv;
	int mode;            /* the action's option letter, 0 for none */
	const char *command; /* -e */
	const char *input;   /* --input's path, "-" for stdin */
	double timeout;
	int loud;
	/* set by neg_cli_prepare */
	char **argv;         /* -e's words */
	size_t argc;
	int infd;            /* --input, opened; -1 for none */
	int input_shared;    /* several calls read it, each from its start (pread) */
	struct buf indata;   /* --input's bytes (a call that does not stream) ... */
	int indata_read;     /* ... once read */
	int64_t deadline;    /* ms, -1: none */
};

void neg_cli_init(struct neg_cli *, const char *usage, int max_running);
int neg_cli_option(struct neg_cli *, int c, const char *arg);
void neg_cli_verbosity(const struct neg_cli *);
void neg_cli_prepare(struct neg_cli *);
void neg_cli_free(struct neg_cli *);

/* The client side of one call. */
/*
 * fd is a virtio port: a hang-up before the request began to leave means the
 * host is not there yet (wait for it, to the deadline), and a POLLOUT wake-up
 * may be lost (writes are retried in short slices).
 */
enum { NEG_CALL_PORT = 1 };

void neg_new_id(char *id, size_t idlen);
int neg_write_out(int fd, const char *, size_t);
int neg_cli_execute(int fd, int flags, struct neg_cli *, const char *peer);

/*
 * A CLI's call as a state machine that one poll loop drives, one or many at
 * once (neg.c, "the client side of a call", draws its phases).  Output goes
 * to emit, or as it comes to our fds 1 and 2 when emit is NULL.
 */
enum { NEG_RUN_HELLO = 1, NEG_RUN_STREAM, NEG_RUN_ONESHOT, NEG_RUN_CALL, NEG_RUN_DONE };

struct neg_run {
	int fd, flags;
	int phase;                 /* NEG_RUN_* */
	struct neg_cli *o;         /* -e's words, -t, --input, --max-frame */
	const char *peer;          /* for messages */
	const char *method;        /* NEG_RUN_CALL: the method */
	char id[PROTO_MAX_ID + 1]; /* the request in progress */
	struct buf wq;             /* frames to send ... */
	size_t wqoff;              /* ... from here */
	int sent;                  /* the first request's bytes began to leave */
	struct proto_reader r;
	int64_t wait;              /* the call's deadline, -1: none */
	int64_t quiet;             /* an "id": null failure is the answer from then ... */
	char refused[256];         /* ... this one */
	char skipped[160];         /* the last data skipped that was no reply */
	int64_t away_until;        /* a port whose host is away is tried again then */
	int away;
	size_t in_credit;          /* stdin bytes the callee takes now */
	int in_open;               /* --input is still being read ... */
	off_t inoff;               /* ... from here (input_shared) */
	size_t taken;              /* output written since the last grant */
	int cancelled;             /* cancel frames sent: 1 TERM, 2 KILL */
	int gone;                  /* our output failed: the call is cancelled */
	int have_resp;             /* resp holds the final reply */
	struct proto_response resp;
	int status;                /* once done: the exit status, as -e of one guest gives it */
	int self_failed;           /* ... negotiator failed (status 255), not the command */
	char err[512];             /* ... what failed, "" if nothing */
	int keep_quiet;            /* failures go to err only, not to stderr */
	int (*emit)(struct neg_run *, int fd, const char *, size_t); /* -1: output failed */
	void *ctx;                 /* the emitter's */
};

void neg_run_start(struct neg_run *, int fd, int flags, struct neg_cli *, const char *peer,
    const char *method, const struct proto_request *call);
void neg_run_cancel(struct neg_run *, int level);
void neg_run_free(struct neg_run *);
void neg_runs_turn(struct neg_run **, size_t n, int64_t wake);
void neg_cli_signals(int on);
int neg_cli_signalled(void);
int neg_cli_list(int fd, int flags, struct neg_cli *, const char *peer);

#endif

// C11 <threads.h> for ThreadSanitizer builds only (-DKPISTREAM_SANITIZE=thread).
//
// Why this exists: Debian's librdkafka starts its threads and takes its locks
// through C11 threads (thrd_create, mtx_lock, cnd_wait, call_once). glibc
// implements those by calling its pthread internals directly, not through the
// PLT, so TSan's pthread interceptors never see them. TSan (gcc 12 and LLVM up
// to 19 alike) has no C11 interceptors, and its runtime crashes on the first
// allocation of a thread it did not see start. Defining the C11 functions in
// our executables interposes them for librdkafka (the dynamic linker prefers
// the executable's definition), and forwarding each to its pthread twin goes
// through TSan's interceptors: librdkafka's threads are registered and its
// locks and condition variables become happens-before edges TSan can use.
//
// glibc lays mtx_t, cnd_t and once_flag out as the pthread types they wrap
// (same size and alignment, checked below), so a plain cast is what glibc
// itself does. Nothing here is compiled into a normal or ASan build.
#include <errno.h>
#include <pthread.h>
#include <threads.h>

#include <cstdint>
#include <cstdlib>

static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t));
static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t));
static_assert(sizeof(once_flag) == sizeof(pthread_once_t));
static_assert(sizeof(thrd_t) == sizeof(pthread_t));

namespace {

int ToThrd(int pthread_rc) {
  switch (pthread_rc) {
    case 0:
      return thrd_success;
    case EBUSY:
      return thrd_busy;
    case ENOMEM:
      return thrd_nomem;
    case ETIMEDOUT:
      return thrd_timedout;
    default:
      return thrd_error;
  }
}

pthread_mutex_t* Native(mtx_t* m) { return reinterpret_cast<pthread_mutex_t*>(m); }
pthread_cond_t* Native(cnd_t* c) { return reinterpret_cast<pthread_cond_t*>(c); }

struct Start {
  thrd_start_t fn;
  void* arg;
};

void* Trampoline(void* p) {
  Start start = *static_cast<Start*>(p);
  std::free(p);
  return reinterpret_cast<void*>(static_cast<intptr_t>(start.fn(start.arg)));
}

}  // namespace

extern "C" {

int thrd_create(thrd_t* thr, thrd_start_t fn, void* arg) {
  auto* start = static_cast<Start*>(std::malloc(sizeof(Start)));
  if (start == nullptr) return thrd_nomem;
  *start = Start{fn, arg};
  pthread_t native;
  const int rc = pthread_create(&native, nullptr, Trampoline, start);
  if (rc != 0) {
    std::free(start);
    return ToThrd(rc);
  }
  *thr = native;
  return thrd_success;
}

int thrd_join(thrd_t thr, int* res) {
  void* ret = nullptr;
  const int rc = pthread_join(thr, &ret);
  if (rc == 0 && res != nullptr) *res = static_cast<int>(reinterpret_cast<intptr_t>(ret));
  return ToThrd(rc);
}

int thrd_detach(thrd_t thr) { return ToThrd(pthread_detach(thr)); }

int mtx_init(mtx_t* m, int type) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  if ((type & mtx_recursive) != 0) pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
  const int rc = pthread_mutex_init(Native(m), &attr);
  pthread_mutexattr_destroy(&attr);
  return ToThrd(rc);
}

int mtx_lock(mtx_t* m) { return ToThrd(pthread_mutex_lock(Native(m))); }
int mtx_trylock(mtx_t* m) { return ToThrd(pthread_mutex_trylock(Native(m))); }
int mtx_unlock(mtx_t* m) { return ToThrd(pthread_mutex_unlock(Native(m))); }
void mtx_destroy(mtx_t* m) { pthread_mutex_destroy(Native(m)); }

int cnd_init(cnd_t* c) { return ToThrd(pthread_cond_init(Native(c), nullptr)); }
int cnd_signal(cnd_t* c) { return ToThrd(pthread_cond_signal(Native(c))); }
int cnd_broadcast(cnd_t* c) { return ToThrd(pthread_cond_broadcast(Native(c))); }
int cnd_wait(cnd_t* c, mtx_t* m) { return ToThrd(pthread_cond_wait(Native(c), Native(m))); }
int cnd_timedwait(cnd_t* c, mtx_t* m, const struct timespec* abs) {
  return ToThrd(pthread_cond_timedwait(Native(c), Native(m), abs));
}
void cnd_destroy(cnd_t* c) { pthread_cond_destroy(Native(c)); }

void call_once(once_flag* flag, void (*fn)(void)) { pthread_once(reinterpret_cast<pthread_once_t*>(flag), fn); }

}  // extern "C"

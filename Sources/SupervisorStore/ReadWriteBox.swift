import Glibc

/// A value behind a reader-writer lock: many readers at once (the event loops authenticating every request),
/// one writer (the committer applying a flushed batch). A `Mutex` made the two loops queue behind each other
/// on every authenticated request.
@usableFromInline
final class ReadWriteBox<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is read only under the read lock and changed only under the write lock.
    /// Behind a pointer: a borrow of a class's stored property copied the whole state (every dictionary
    /// retained) on each read; `pointee` is borrowed in place.
    @usableFromInline let value: UnsafeMutablePointer<Value>
    @usableFromInline let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init(_ value: Value) {
        self.value = .allocate(capacity: 1)
        self.value.initialize(to: value)
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        // Writers first: a steady stream of readers must not hold a commit back (reads never nest, so a
        // writer-preferring lock cannot deadlock a reader).
        var attr = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attr)
        pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(lock, &attr)
        pthread_rwlockattr_destroy(&attr)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
        value.deinitialize(count: 1)
        value.deallocate()
    }

    @inlinable
    func withReadLock<T>(_ body: (borrowing Value) -> T) -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return body(value.pointee)
    }

    @inlinable
    func withWriteLock<T>(_ body: (inout Value) -> T) -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return body(&value.pointee)
    }
}

package state

import "sync"

// KeyedMutex serialises operations per key (one pod, one container) while
// operations on different keys run at once. The zero value is ready.
type KeyedMutex struct {
	locks sync.Map // key → *sync.Mutex
}

// Lock locks key and returns the unlock function.
func (k *KeyedMutex) Lock(key string) func() {
	v, _ := k.locks.LoadOrStore(key, &sync.Mutex{})
	mu := v.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// Forget drops key's mutex once its object is gone for good.
func (k *KeyedMutex) Forget(key string) { k.locks.Delete(key) }

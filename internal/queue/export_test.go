package queue

// SetAfterTake makes q's workers call f right after they took a run (saved
// it as running), before it starts: a test holds that moment open.
func SetAfterTake(q *Queue, f func(id string)) { q.afterTake = f }

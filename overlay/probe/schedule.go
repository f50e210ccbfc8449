package probe

import (
	"container/heap"
	"time"
)

// entry is one target and its place in the schedule.
type entry struct {
	t   Target
	key Key
	due time.Time
	// index is the entry's place in the schedule's heap; -1 while its
	// check is in flight, or once it left the targets.
	index int
	// seen is the refresh that last listed the target: a refresh finds
	// the departed ones without building a new set.
	seen uint64
}

// schedule is a min-heap of the targets waiting for their next check, by
// due time: the Run loop finds the one due first in O(1) and takes it out
// in O(log n), where a scan of every target for each check cost a quiet
// host with 10,000 peers a quarter of a core (issue #14).
type schedule []*entry

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].due.Before(s[j].due) }

func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}

func (s *schedule) Push(x any) {
	e := x.(*entry)
	e.index = len(*s)
	*s = append(*s, e)
}

func (s *schedule) Pop() any {
	old := *s
	e := old[len(old)-1]
	old[len(old)-1] = nil // no reference kept to a target that leaves
	e.index = -1
	*s = old[:len(old)-1]
	return e
}

// add schedules e at its due time.
func (s *schedule) add(e *entry) { heap.Push(s, e) }

// remove takes e out of the schedule, if it is in it.
func (s *schedule) remove(e *entry) {
	if e.index >= 0 {
		heap.Remove(s, e.index)
	}
}

// first is the entry due first; nil if none waits.
func (s schedule) first() *entry {
	if len(s) == 0 {
		return nil
	}
	return s[0]
}

// The example Go library: the implementation of the Hashing interface (hashing_iface.py).
// Everything else in this package (keel_*.go, keel_hashing.h) is generated.
package main

/*
#include <stdint.h>
static void keel_example_touch(void *pointer) { (void)pointer; }
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

type hashing struct{}

// NewHashing is what the generated glue calls once, when the library loads.
func NewHashing() Hashing { return hashing{} }

func (hashing) Empty() error { return nil }

func (hashing) Hash(data []byte) (uint64, error) {
	hasher := fnv.New64a()
	hasher.Write(data)
	return hasher.Sum64(), nil
}

func (h hashing) HashText(text string) (uint64, error) {
	hasher := fnv.New64a()
	hasher.Write([]byte(text))
	return hasher.Sum64(), nil
}

func (hashing) SumInt32(values []int32) (int64, error) {
	var total int64
	for _, value := range values {
		total += int64(value)
	}
	return total, nil
}

const recordFields = 5

func (hashing) ParseRecord(line string) (Record, error) {
	parts := strings.Split(strings.TrimSpace(line), ";")
	if len(parts) != recordFields {
		return Record{}, fmt.Errorf("record %q has %d fields, expected %d", line, len(parts), recordFields)
	}
	id, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil {
		return Record{}, fmt.Errorf("record id: %w", err)
	}
	score, err := strconv.ParseFloat(parts[2], 64)
	if err != nil {
		return Record{}, fmt.Errorf("record score: %w", err)
	}
	var tags []string
	if parts[3] != "" {
		tags = strings.Split(parts[3], ",")
	}
	record := Record{Id: id, Name: parts[1], Score: score, Tags: tags}
	if parts[4] != "" {
		coordinates := strings.Split(parts[4], ",")
		if len(coordinates) != 2 {
			return Record{}, fmt.Errorf("record location %q: expected lat,lon", parts[4])
		}
		latitude, err := strconv.ParseFloat(coordinates[0], 64)
		if err != nil {
			return Record{}, fmt.Errorf("record latitude: %w", err)
		}
		longitude, err := strconv.ParseFloat(coordinates[1], 32)
		if err != nil {
			return Record{}, fmt.Errorf("record longitude: %w", err)
		}
		record.Location = &Location{Latitude: latitude, Longitude: float32(longitude)}
	}
	return record, nil
}

func (hashing) Describe(record Record) (string, error) {
	where := "nowhere"
	if record.Location != nil {
		where = fmt.Sprintf("%.2f,%.2f", record.Location.Latitude, record.Location.Longitude)
	}
	return fmt.Sprintf("#%d %s (%.1f) [%s] @ %s", record.Id, record.Name, record.Score,
		strings.Join(record.Tags, " "), where), nil
}

func (hashing) EchoRecords(records []Record) ([]Record, error) {
	// The arguments alias Python memory: copy what outlives the call (the result is copied
	// into a C arena by the glue before this returns, so returning them is fine).
	return records, nil
}

func (hashing) EchoWidths(widths Widths) (Widths, error) { return widths, nil }

func (hashing) MaybeDouble(value *int64) (*int64, error) {
	if value == nil {
		return nil, nil
	}
	doubled := *value * 2
	return &doubled, nil
}

func (hashing) BlockSum(block Block) (int64, error) {
	total := block.A0 + block.A1 + block.A2 + block.A29
	for _, value := range block.Values {
		total += value
	}
	return total, nil
}

func (hashing) Divide(dividend, divisor int64) (int64, error) { return dividend / divisor, nil }

func (hashing) CheckedAdd(left, right int32) (int32, error) {
	sum := int64(left) + int64(right)
	if sum > math.MaxInt32 || sum < math.MinInt32 {
		return 0, fmt.Errorf("%d + %d overflows int32", left, right)
	}
	return int32(sum), nil
}

func (hashing) Scale(value float64, factor float32) (float64, error) {
	return value * float64(factor), nil
}

func (hashing) IsEven(value uint64) (bool, error) { return value%2 == 0, nil }

func (hashing) Fail(message string) error { return errors.New(message) }

func (hashing) Crash(message string) error { panic(message) }

func (hashing) EachWord(text string, visit func(int64, string) (bool, error)) (int32, error) {
	words := strings.Fields(text)
	// Copy: the goroutine outlives nothing here, but text aliases Python memory only for the
	// duration of the call, and the goroutine below finishes before we return.
	done := make(chan error, 1)
	var visited int32
	go func() {
		for index, word := range words {
			more, err := visit(int64(index), word)
			if err != nil {
				done <- err
				return
			}
			visited++
			if !more {
				break
			}
		}
		done <- nil
	}()
	return visited, <-done
}

func (hashing) SlowSquare(ctx context.Context, value int64, delayMs uint32) (int64, error) {
	select {
	case <-time.After(time.Duration(delayMs) * time.Millisecond):
		return value * value, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (h hashing) HashAsync(ctx context.Context, data []byte) (uint64, error) { return h.Hash(data) }

func (h hashing) ParseRecordAsync(ctx context.Context, line string) (Record, error) {
	return h.ParseRecord(line)
}

func (hashing) EmptyAsync(ctx context.Context) error { return nil }

func (hashing) CrashAsync(ctx context.Context, message string) error { panic(message) }

func (hashing) StubbornSquare(ctx context.Context, value int64, delayMs uint32) (int64, error) {
	time.Sleep(time.Duration(delayMs) * time.Millisecond)
	return value * value, nil
}

func (hashing) AddressOfBytes(data []byte) (uint64, error) {
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(data)))), nil
}

func (hashing) AddressOfText(text string) (uint64, error) {
	return uint64(uintptr(unsafe.Pointer(unsafe.StringData(text)))), nil
}

func (hashing) AddressOfInt32s(values []int32) (uint64, error) {
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(values)))), nil
}

func (hashing) Sleep(milliseconds uint32) error {
	time.Sleep(time.Duration(milliseconds) * time.Millisecond)
	return nil
}

type pointerHolder struct{ target *int }

func (hashing) CgocheckProbe() error {
	holder := &pointerHolder{target: new(int)}
	C.keel_example_touch(unsafe.Pointer(holder)) // cgocheck: Go pointer to unpinned Go pointer
	return nil
}

func (hashing) Goroutines() (int64, error) { return int64(runtime.NumGoroutine()), nil }

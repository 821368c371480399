package apispec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// object is a decoded JSON object that remembers its key order, so the
// first problem reported is the first in the document.
type object struct {
	keys []string
	vals map[string]any
}

// decodeStrict decodes one JSON value like a strict deserializer does:
// a key twice in one object is an error ("duplicate field"), numbers stay
// json.Number so 1 and 1.0 differ, and nothing may follow the value.
func decodeStrict(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing characters after the JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := &object{vals: map[string]any{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("malformed JSON: %w", err)
				}
				k := kt.(string)
				if _, dup := obj.vals[k]; dup {
					return nil, fmt.Errorf("duplicate field %q", k)
				}
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				obj.keys = append(obj.keys, k)
				obj.vals[k] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("malformed JSON: %w", err)
			}
			return obj, nil
		case '[':
			arr := []any{}
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("malformed JSON: %w", err)
			}
			return arr, nil
		}
		return nil, fmt.Errorf("malformed JSON: unexpected %v", t)
	default:
		return t, nil // string, json.Number, bool or nil
	}
}

//! MIDI: note data only, no files. `start`/`end` arrive as numbers or strings.

use serde_json::Value;

use super::value::{Object, f64_of, i64_of, storable, string_field};
use crate::{Details, MidiInstrument, MidiNote};

pub(super) fn parse(data: Option<&Object>) -> Details {
    let state = data.and_then(|d| string_field(d, &["state"]));
    let instruments = data.and_then(|d| d.get("instruments")).and_then(Value::as_array);
    let instruments = instruments
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|instrument| MidiInstrument {
            name: string_field(instrument, &["name"]).unwrap_or_default(),
            notes: instrument
                .get("notes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .filter_map(note)
                .collect(),
        })
        .collect();
    Details::Midi { state, instruments }
}

/// The pitches a note may have: MIDI's are 0..=127, this leaves room for other scales.
const PITCHES: std::ops::RangeInclusive<i64> = 0..=1000;

/// A note needs a readable pitch, start and end, and every number within a range DynamoDB
/// stores ([`storable`]); the verbatim body keeps anything skipped.
fn note(note: &Object) -> Option<MidiNote> {
    let velocity = match f64_of(note.get("velocity")) {
        Some(velocity) => storable(velocity)?,
        None => 0.0,
    };
    Some(MidiNote {
        pitch: i64_of(note.get("pitch")).filter(|p| PITCHES.contains(p))?,
        start: f64_of(note.get("start")).and_then(storable)?,
        end: f64_of(note.get("end")).and_then(storable)?,
        velocity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mixed_times_and_unreadable_notes() {
        let data = json!({"state":"complete","instruments":[
            {"name":"Drums","notes":[
                {"pitch":73,"start":"0.5","end":0.75,"velocity":1},
                {"pitch":"61","start":1,"end":"1.25"},
                {"pitch":60,"start":"soon","end":2},
                {"pitch":60,"end":2},
                "not a note"
            ]},
            {"notes":null},
            7
        ]});
        let Details::Midi { state, instruments } = parse(data.as_object()) else { panic!() };
        assert_eq!(state.as_deref(), Some("complete"));
        assert_eq!(instruments.len(), 2);
        assert_eq!(
            instruments[0].notes,
            [
                MidiNote { pitch: 73, start: 0.5, end: 0.75, velocity: 1.0 },
                MidiNote { pitch: 61, start: 1.0, end: 1.25, velocity: 0.0 },
            ]
        );
        assert_eq!(instruments[1], MidiInstrument { name: String::new(), notes: vec![] });
        assert_eq!(parse(None), Details::Midi { state: None, instruments: vec![] });
    }
}

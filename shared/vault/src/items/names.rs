//! Every attribute name an item of the table may carry, read from the item types' own serde
//! field lists, so that an expression naming attributes by hand (`attribute_not_exists(x)`,
//! `#lease` for `lease_until`) can be checked against them: a field renamed or a name
//! mistyped would otherwise make a condition always true, or an `ADD` a stray attribute.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::{CallbackEntry, FileEntry, TaskRecord};

/// The keys, the task item's fields and sets, a file item's fields and a callback item's.
pub fn attribute_names() -> BTreeSet<&'static str> {
    let mut names = BTreeSet::from([super::PARTITION_KEY, super::SORT_KEY]);
    names.extend(fields_of::<TaskRecord>());
    names.extend(fields_of::<super::Sets>());
    names.extend(fields_of::<FileEntry>());
    names.extend(fields_of::<CallbackEntry>());
    names
}

/// The field names a derived `Deserialize` of a struct asks for (none for any other type).
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldList(&mut fields));
    fields.unwrap_or_default()
}

/// A deserializer that answers nothing, only noting the fields a struct asks for.
struct FieldList<'a>(&'a mut Option<&'static [&'static str]>);

#[derive(Debug)]
struct Noted;

impl fmt::Display for Noted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names noted")
    }
}

impl std::error::Error for Noted {}

impl de::Error for Noted {
    fn custom<T: fmt::Display>(_: T) -> Noted {
        Noted
    }
}

impl<'de> Deserializer<'de> for FieldList<'_> {
    type Error = Noted;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Noted> {
        Err(Noted)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Noted> {
        *self.0 = Some(fields);
        Err(Noted)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names hold the keys, fields and sets, not the record's item maps; and every
    /// attribute the items of a record hold, as [`super::super::task_item`] and the others
    /// write them.
    #[test]
    fn every_attribute_a_written_item_holds_is_named() {
        let names = attribute_names();
        for name in ["task_id", "sk", "version", "open", "reconcile_at", "bodies", "queued", "lease_until", "rev"] {
            assert!(names.contains(name), "{name}: {names:?}");
        }
        assert!(!names.contains("files") && !names.contains("callbacks"), "items of their own, not attributes");
        let record = crate::record::tests::record();
        let mut written: Vec<String> = super::super::task_item(&record).unwrap().into_inner().into_keys().collect();
        for (name, file) in &record.files {
            written.extend(super::super::file_item(&record.task_id, name, file).unwrap().into_inner().into_keys());
        }
        for (id, callback) in &record.callbacks {
            written
                .extend(super::super::callback_item(&record.task_id, id, callback).unwrap().into_inner().into_keys());
        }
        let unnamed: Vec<&String> = written.iter().filter(|w| !names.contains(w.as_str())).collect();
        assert!(unnamed.is_empty(), "{unnamed:?}");
    }
}

//! The `field=` names a client may select, per model, and sets of them.

use super::records::Metric;

/// A selectable field of a [`super::Unit`] (all 30 JSON names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnitField {
    ClusterId,
    ResourceManager,
    Uuid,
    Name,
    Project,
    Groupname,
    Username,
    CreatedAt,
    StartedAt,
    EndedAt,
    CreatedAtTs,
    StartedAtTs,
    EndedAtTs,
    Elapsed,
    State,
    Allocation,
    Metric(Metric),
    Tags,
}

impl UnitField {
    pub const PLAIN: [UnitField; 16] = [
        UnitField::ClusterId,
        UnitField::ResourceManager,
        UnitField::Uuid,
        UnitField::Name,
        UnitField::Project,
        UnitField::Groupname,
        UnitField::Username,
        UnitField::CreatedAt,
        UnitField::StartedAt,
        UnitField::EndedAt,
        UnitField::CreatedAtTs,
        UnitField::StartedAtTs,
        UnitField::EndedAtTs,
        UnitField::Elapsed,
        UnitField::State,
        UnitField::Allocation,
    ];

    /// Every field in output order.
    pub fn all() -> impl Iterator<Item = UnitField> {
        Self::PLAIN
            .into_iter()
            .chain(Metric::ALL.into_iter().map(UnitField::Metric))
            .chain(std::iter::once(UnitField::Tags))
    }

    /// The JSON key, which is also the column name.
    pub fn name(self) -> &'static str {
        match self {
            UnitField::ClusterId => "cluster_id",
            UnitField::ResourceManager => "resource_manager",
            UnitField::Uuid => "uuid",
            UnitField::Name => "name",
            UnitField::Project => "project",
            UnitField::Groupname => "groupname",
            UnitField::Username => "username",
            UnitField::CreatedAt => "created_at",
            UnitField::StartedAt => "started_at",
            UnitField::EndedAt => "ended_at",
            UnitField::CreatedAtTs => "created_at_ts",
            UnitField::StartedAtTs => "started_at_ts",
            UnitField::EndedAtTs => "ended_at_ts",
            UnitField::Elapsed => "elapsed",
            UnitField::State => "state",
            UnitField::Allocation => "allocation",
            UnitField::Metric(metric) => metric.column(),
            UnitField::Tags => "tags",
        }
    }

    pub fn parse(name: &str) -> Option<UnitField> {
        Self::all().find(|field| field.name() == name)
    }

    fn bit(self) -> u32 {
        match self {
            UnitField::Metric(metric) => 16 + metric as u32,
            UnitField::Tags => 29,
            plain => plain.plain_index(),
        }
    }

    fn plain_index(self) -> u32 {
        Self::PLAIN
            .iter()
            .position(|field| *field == self)
            .map_or(0, |index| index as u32)
    }
}

/// A selectable field of a [`super::Usage`] (all 19 JSON names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsageField {
    ClusterId,
    ResourceManager,
    NumUnits,
    Project,
    Groupname,
    Username,
    Metric(Metric),
}

impl UsageField {
    pub const PLAIN: [UsageField; 6] = [
        UsageField::ClusterId,
        UsageField::ResourceManager,
        UsageField::NumUnits,
        UsageField::Project,
        UsageField::Groupname,
        UsageField::Username,
    ];

    pub fn all() -> impl Iterator<Item = UsageField> {
        Self::PLAIN
            .into_iter()
            .chain(Metric::ALL.into_iter().map(UsageField::Metric))
    }

    pub fn name(self) -> &'static str {
        match self {
            UsageField::ClusterId => "cluster_id",
            UsageField::ResourceManager => "resource_manager",
            UsageField::NumUnits => "num_units",
            UsageField::Project => "project",
            UsageField::Groupname => "groupname",
            UsageField::Username => "username",
            UsageField::Metric(metric) => metric.column(),
        }
    }

    pub fn parse(name: &str) -> Option<UsageField> {
        Self::all().find(|field| field.name() == name)
    }

    fn bit(self) -> u32 {
        match self {
            UsageField::Metric(metric) => 6 + metric as u32,
            plain => Self::PLAIN
                .iter()
                .position(|field| *field == plain)
                .map_or(0, |index| index as u32),
        }
    }
}

/// Something with a small fixed set of fields that a request selects from.
pub trait Field: Copy + 'static {
    fn all_fields() -> Box<dyn Iterator<Item = Self>>;
    fn field_bit(self) -> u32;
    fn parse_field(name: &str) -> Option<Self>;
}

impl Field for UnitField {
    fn all_fields() -> Box<dyn Iterator<Item = Self>> {
        Box::new(UnitField::all())
    }
    fn field_bit(self) -> u32 {
        self.bit()
    }
    fn parse_field(name: &str) -> Option<Self> {
        UnitField::parse(name)
    }
}

impl Field for UsageField {
    fn all_fields() -> Box<dyn Iterator<Item = Self>> {
        Box::new(UsageField::all())
    }
    fn field_bit(self) -> u32 {
        self.bit()
    }
    fn parse_field(name: &str) -> Option<Self> {
        UsageField::parse(name)
    }
}

/// A set of selected fields, iterated in output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldSet<F> {
    bits: u32,
    _field: std::marker::PhantomData<F>,
}

/// Why a `field=` list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query fields")]
pub struct InvalidFields;

impl<F: Field> FieldSet<F> {
    pub fn all() -> Self {
        let mut set = Self::empty();
        for field in F::all_fields() {
            set.insert(field);
        }
        set
    }

    pub fn empty() -> Self {
        Self {
            bits: 0,
            _field: std::marker::PhantomData,
        }
    }

    pub fn insert(&mut self, field: F) {
        self.bits |= 1 << field.field_bit();
    }

    pub fn contains(&self, field: F) -> bool {
        self.bits & (1 << field.field_bit()) != 0
    }

    pub fn iter(&self) -> impl Iterator<Item = F> + '_ {
        F::all_fields().filter(move |field| self.contains(*field))
    }

    /// The reference's rule: no `field=` selects everything; values are trimmed and
    /// unknown names dropped; if some were given and none is valid, the request is refused.
    pub fn from_params<S: AsRef<str>>(values: &[S]) -> Result<Self, InvalidFields> {
        if values.is_empty() {
            return Ok(Self::all());
        }
        let mut set = Self::empty();
        for value in values {
            if let Some(field) = F::parse_field(value.as_ref().trim()) {
                set.insert(field);
            }
        }
        if set.bits == 0 {
            Err(InvalidFields)
        } else {
            Ok(set)
        }
    }
}

pub type UnitFieldSet = FieldSet<UnitField>;
pub type UsageFieldSet = FieldSet<UsageField>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_distinct_bit_and_round_trips() {
        assert_eq!(UnitField::all().count(), 30);
        assert_eq!(UsageField::all().count(), 19);
        let mut seen = 0u32;
        for field in UnitField::all() {
            assert_eq!(UnitField::parse(field.name()), Some(field));
            assert_eq!(seen & (1 << field.bit()), 0, "{field:?}");
            seen |= 1 << field.bit();
        }
        let mut seen = 0u32;
        for field in UsageField::all() {
            assert_eq!(UsageField::parse(field.name()), Some(field));
            assert_eq!(seen & (1 << field.bit()), 0, "{field:?}");
            seen |= 1 << field.bit();
        }
    }

    #[test]
    fn field_params_follow_the_reference_rules() {
        assert_eq!(
            UnitFieldSet::from_params::<&str>(&[]),
            Ok(UnitFieldSet::all())
        );
        let set = UnitFieldSet::from_params(&[" uuid ", "bogus", "uuid"]).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![UnitField::Uuid]);
        assert_eq!(UnitFieldSet::from_params(&["bogus"]), Err(InvalidFields));
        assert_eq!(UsageFieldSet::from_params(&["uuid"]), Err(InvalidFields));
    }
}

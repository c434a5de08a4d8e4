//! Checks for single wire fields: each one goes through the core's own constructor.

use exchange_core::{BindingId, CreditId, Money, PersonId, Province, RefundId, Region, SettlementId, TransferId};

use crate::error::{ConvertError, ConvertResult};

/// Longest free-text field accepted on the wire (names, institutions, references, reasons), in
/// bytes. The core applies its own, tighter business limits and refuses with its own reason
/// codes; this bound only keeps a hostile message from making the node store megabytes.
pub const TEXT_FIELD_LEN_MAX: usize = 1024;

pub(crate) fn person(field: &str, text: &str) -> ConvertResult<PersonId> {
    PersonId::parse(text).map_err(|error| ConvertError::new(field, error))
}

pub(crate) fn money(field: &str, fen: u64) -> ConvertResult<Money> {
    Money::from_fen(fen).map_err(|error| ConvertError::new(field, error))
}

pub(crate) fn optional_money(field: &str, fen: Option<u64>) -> ConvertResult<Option<Money>> {
    fen.map(|fen| money(field, fen)).transpose()
}

pub(crate) fn province(field: &str, code: u32) -> ConvertResult<Province> {
    Province::from_code(code).map_err(|error| ConvertError::new(field, error))
}

pub(crate) fn region(field: &str, code: u32) -> ConvertResult<Region> {
    Region::from_code(code).map_err(|error| ConvertError::new(field, error))
}

pub(crate) fn binding_id(field: &str, text: &str) -> ConvertResult<BindingId> {
    text.parse().map_err(|error| ConvertError::new(field, error))
}

pub(crate) fn optional_binding_id(field: &str, text: Option<&str>) -> ConvertResult<Option<BindingId>> {
    text.map(|text| binding_id(field, text)).transpose()
}

pub(crate) fn settlement_id(field: &str, text: String) -> ConvertResult<SettlementId> {
    SettlementId::new(text).map_err(|error| ConvertError::new(field, error))
}

pub(crate) fn refund_id(field: &str, text: String) -> ConvertResult<RefundId> {
    RefundId::new(text).map_err(|error| ConvertError::new(field, error))
}

pub(crate) fn credit_id(field: &str, text: String) -> ConvertResult<CreditId> {
    CreditId::new(text).map_err(|error| ConvertError::new(field, error))
}

pub(crate) fn transfer_id(field: &str, text: String) -> ConvertResult<TransferId> {
    TransferId::new(text).map_err(|error| ConvertError::new(field, error))
}

pub(crate) fn text(field: &str, text: String) -> ConvertResult<String> {
    if text.len() > TEXT_FIELD_LEN_MAX {
        return Err(ConvertError::new(
            field,
            format!("is {} bytes long; at most {TEXT_FIELD_LEN_MAX} are allowed", text.len()),
        ));
    }
    Ok(text)
}

pub(crate) fn optional_text(field: &str, value: Option<String>) -> ConvertResult<Option<String>> {
    value.map(|value| text(field, value)).transpose()
}

/// A sub-message proto3 leaves optional but the core needs.
pub(crate) fn required<T>(field: &str, value: Option<T>) -> ConvertResult<T> {
    value.ok_or_else(|| ConvertError::missing(field))
}

/// Converts a required sub-message, prefixing its errors with the field's name.
pub(crate) fn nested<P, C>(field: &str, value: Option<P>) -> ConvertResult<C>
where
    C: TryFrom<P, Error = ConvertError>,
{
    C::try_from(required(field, value)?).map_err(|error| error.within(field))
}

/// Converts an optional sub-message, prefixing its errors with the field's name.
pub(crate) fn optional_nested<P, C>(field: &str, value: Option<P>) -> ConvertResult<Option<C>>
where
    C: TryFrom<P, Error = ConvertError>,
{
    value
        .map(|value| C::try_from(value).map_err(|error| error.within(field)))
        .transpose()
}

/// Converts a repeated field, naming the bad element by its index.
pub(crate) fn repeated<P, C>(field: &str, values: Vec<P>) -> ConvertResult<Vec<C>>
where
    C: TryFrom<P, Error = ConvertError>,
{
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| C::try_from(value).map_err(|error| error.within(&format!("{field}[{index}]"))))
        .collect()
}

pub(crate) fn narrow<T: TryFrom<u32>>(field: &str, value: u32) -> ConvertResult<T> {
    T::try_from(value).map_err(|_| {
        ConvertError::new(
            field,
            format!("{value} is out of range for {}", std::any::type_name::<T>()),
        )
    })
}

/// Rejects the zero ("unspecified") value of a proto enum and values this build does not know.
pub(crate) fn enumeration<E>(field: &str, value: i32, unspecified: E) -> ConvertResult<E>
where
    E: TryFrom<i32> + PartialEq,
{
    match E::try_from(value) {
        Ok(known) if known == unspecified => Err(ConvertError::missing(field)),
        Ok(known) => Ok(known),
        Err(_) => Err(ConvertError::new(field, format!("{value} is not a known value"))),
    }
}

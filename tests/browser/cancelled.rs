//! A payment cancelled at the gateway's cashier (the protocol sends no cancel notify):
//! the order offers "Pay now" only while it can still be paid, reads Expired after its
//! time with no dead button, and the admin's re-check of the unpaid trade is amber.

use fantoccini::Locator;

use super::Session;

pub async fn a_cancelled_payment_expires_honestly(s: &Session) {
    // The admin (signed in at this point) starts buying and cancels at the cashier.
    s.go("/packages").await;
    s.click(".buy-credit").await;
    for _ in 0..50 {
        if s.path().await.starts_with("/sandbox/epay/cashier/") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.click("#sandbox-cancel").await;
    // The cashier sends the buyer back with the order: the box says the payment was
    // cancelled, nothing charged, and "Pay now" opens the cashier again.
    s.wait_path("/packages").await;
    let said = s.text("#order-status #order-cancelled").await;
    assert!(said.contains("cancelled the payment") && said.contains("nothing was charged"), "{said}");
    let status = s.c.find(Locator::Css("#order-status")).await.unwrap();
    assert_eq!(status.attr("data-status").await.unwrap().as_deref(), Some("pending"));
    assert!(status.attr("hx-get").await.unwrap().is_none(), "a cancelled payment is not polled");
    s.shot("49-cancelled-at-the-cashier").await;
    s.click("#order-status .pay-now").await;
    for _ in 0..50 {
        if s.path().await.starts_with("/sandbox/epay/cashier/") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.text("#sandbox-pay").await;
    s.click("#sandbox-cancel").await;
    s.wait_path("/packages").await;
    s.text("#order-cancelled").await;
    s.go("/orders").await;
    let row = s.text("#orders-table tbody tr").await;
    assert!(row.contains("Awaiting payment"), "{row}");
    assert!(
        s.c.find(Locator::Css("#orders-table tbody tr:first-child .pay-now")).await.is_ok(),
        "payable until its deadline"
    );
    let otn = s.text("#orders-table tbody tr:first-child code").await;
    s.shot("50-cancelled-still-payable").await;

    // Past the order's time to pay (15 minutes) nothing can pay it any more.
    s.app.clock.advance(chrono::Duration::minutes(16));
    s.go("/orders").await;
    let row = s.text("#orders-table tbody tr").await;
    assert!(row.contains(&otn) && row.contains("Expired"), "{row}");
    assert!(s.c.find(Locator::Css("#orders-table .pay-now")).await.is_err(), "no dead Pay now");
    s.shot("51-cancelled-expired-orders").await;

    // The operator's re-check asks the gateway: not paid, in amber, never green.
    s.go("/admin/orders").await;
    s.click(&format!("form[action='/admin/orders/{otn}/check'] button")).await;
    let notice = s.c.wait().for_element(Locator::Css("#notice")).await.unwrap();
    assert_eq!(notice.attr("data-tone").await.unwrap().as_deref(), Some("warn"), "{}", notice.text().await.unwrap());
    let said = notice.text().await.unwrap();
    assert!(said.contains(&otn), "{said}");
    // The badge in the table says Expired (the job has not run yet): the notice says the same.
    assert!(said.contains("order: Expired") && !said.contains("Awaiting payment"), "{said}");
    s.shot("52-cancelled-admin-recheck-amber").await;
    // The admin bar used to push this page one pixel past a 1280 px screen: it fits now.
    super::phone::every_table_fits_the_desktop(s, &["/admin/orders"], "desktop-admin-orders").await;
}
